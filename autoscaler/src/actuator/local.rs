//! The local-process actuator, used by the local stack (`make up`): the pool is `worker`
//! processes on this machine.
//!
//! Worker `n` (from 1) of the region runs `worker [--config FILE] run` with its id
//! (`<id_prefix>-<region>-<n>`), region and ops address in its environment
//! (`SWITCHYARD_WORKER_WORKER__ID`, `…__REGION`, `…__OPS_LISTEN`), in a process group of its
//! own (a Ctrl-C meant for the autoscaler does not reach it), with its output appended to
//! `<log_dir>/worker-<region>-<n>.log` and its pid in `<run_dir>/worker-<region>-<n>.pid`.
//!
//! * Scaling up starts workers at the lowest free numbers; scaling down sends SIGTERM to the
//!   highest-numbered running ones, which stop pulling, finish their jobs and exit (the
//!   worker's drain), and SIGKILL to one still running `kill_after` later.
//! * Exited workers are reaped and their pid files removed; one that dies unasked leaves
//!   the pool, and the next decision replaces it.
//! * Workers outlive the autoscaler: a restarted autoscaler adopts the live processes its
//!   pid files name (checking that the pid still is that worker), and `make down` stops
//!   them through the same pid files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use protocol::Region;

use super::ActuatorError;
use crate::config::LocalConfig;

/// The environment variable that carries a worker's id.
const ID_VAR: &str = "SWITCHYARD_WORKER_WORKER__ID";

/// Worker processes on this machine.
#[derive(Debug)]
pub struct LocalActuator {
    region: Region,
    cfg: LocalConfig,
    workers: BTreeMap<u32, Proc>,
}

#[derive(Debug)]
struct Proc {
    pid: u32,
    /// The process handle, for workers this autoscaler started (adopted ones have none).
    child: Option<tokio::process::Child>,
    /// When it was asked to stop.
    stopping: Option<Instant>,
}

impl LocalActuator {
    /// An actuator for `region`'s workers that adopts the ones already running.
    pub fn new(region: Region, cfg: LocalConfig) -> Self {
        let mut actuator = Self {
            region,
            cfg,
            workers: BTreeMap::new(),
        };
        actuator.adopt();
        actuator
    }

    /// `worker-<region>-<n>`: the name of worker `n`'s pid and log files.
    pub fn name(&self, n: u32) -> String {
        format!("worker-{}-{n}", self.region)
    }

    /// The id worker `n` runs under.
    pub fn worker_id(&self, n: u32) -> String {
        worker_id(&self.cfg.id_prefix, &self.region, n)
    }

    fn pid_file(&self, n: u32) -> PathBuf {
        self.cfg.run_dir.join(format!("{}.pid", self.name(n)))
    }

    fn ops_listen(&self, n: u32) -> String {
        let port = if self.cfg.ops_port_first == 0 {
            0
        } else {
            u32::from(self.cfg.ops_port_first) + (n - 1) * u32::from(self.cfg.ops_port_step)
        };
        format!("{}:{port}", self.cfg.ops_host)
    }

    /// Takes over the live workers the run directory's pid files name; removes the pid
    /// files of workers that are gone.
    fn adopt(&mut self) {
        let prefix = format!("worker-{}-", self.region);
        let Ok(entries) = std::fs::read_dir(&self.cfg.run_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let file = entry.file_name();
            let Some(n) = file
                .to_str()
                .and_then(|f| f.strip_prefix(&prefix))
                .and_then(|f| f.strip_suffix(".pid"))
                .and_then(|n| n.parse::<u32>().ok())
                .filter(|&n| n > 0)
            else {
                continue;
            };
            let pid = std::fs::read_to_string(entry.path())
                .ok()
                .and_then(|p| p.trim().parse::<u32>().ok());
            match pid {
                Some(pid) if is_worker(pid, &self.worker_id(n)) => {
                    tracing::info!(worker = %self.worker_id(n), pid, "adopted a running worker");
                    self.workers.insert(
                        n,
                        Proc {
                            pid,
                            child: None,
                            stopping: None,
                        },
                    );
                }
                _ => {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }

    /// Reaps the workers that exited and kills those that outstayed their drain; returns the
    /// running workers that were not asked to stop.
    pub fn current(&mut self) -> u32 {
        let mut gone = Vec::new();
        for (&n, proc) in &mut self.workers {
            let exited = match &mut proc.child {
                Some(child) => match child.try_wait() {
                    Ok(Some(status)) => Some(status.to_string()),
                    Ok(None) => None,
                    Err(e) => Some(format!("unknown ({e})")),
                },
                None => (!is_worker(proc.pid, &worker_id(&self.cfg.id_prefix, &self.region, n)))
                    .then(|| "unknown (adopted)".to_owned()),
            };
            if let Some(status) = exited {
                if proc.stopping.is_some() {
                    tracing::info!(worker = n, pid = proc.pid, %status, "worker stopped");
                } else {
                    tracing::warn!(worker = n, pid = proc.pid, %status, "worker exited unasked");
                }
                gone.push(n);
            } else if proc
                .stopping
                .is_some_and(|since| since.elapsed() >= self.cfg.kill_after)
            {
                tracing::warn!(
                    worker = n,
                    pid = proc.pid,
                    "worker still draining; killing it"
                );
                signal(proc.pid, Signal::SIGKILL);
            }
        }
        for n in gone {
            self.workers.remove(&n);
            let _ = std::fs::remove_file(self.pid_file(n));
        }
        self.running()
    }

    /// Workers running and not asked to stop.
    pub fn running(&self) -> u32 {
        let n = self
            .workers
            .values()
            .filter(|p| p.stopping.is_none())
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// Starts or stops workers until `desired` run.
    pub fn scale(&mut self, desired: u32) -> Result<(), ActuatorError> {
        let running = self.current();
        if desired > running {
            for _ in running..desired {
                let n = (1..)
                    .find(|n| !self.workers.contains_key(n))
                    .expect("an unbounded range has a free number");
                self.start(n)?;
            }
        } else if desired < running {
            let excess = usize::try_from(running - desired).unwrap_or(usize::MAX);
            let victims: Vec<u32> = self
                .workers
                .iter()
                .rev()
                .filter(|(_, p)| p.stopping.is_none())
                .map(|(&n, _)| n)
                .take(excess)
                .collect();
            for n in victims {
                if let Some(proc) = self.workers.get_mut(&n) {
                    tracing::info!(
                        worker = n,
                        pid = proc.pid,
                        "stopping a worker (it drains first)"
                    );
                    signal(proc.pid, Signal::SIGTERM);
                    proc.stopping = Some(Instant::now());
                }
            }
        }
        Ok(())
    }

    fn start(&mut self, n: u32) -> Result<(), ActuatorError> {
        let name = self.name(n);
        let err = |what: &'static str| {
            let name = name.clone();
            move |source| ActuatorError::Process { name, what, source }
        };
        std::fs::create_dir_all(&self.cfg.run_dir).map_err(err("creating the run directory"))?;
        std::fs::create_dir_all(&self.cfg.log_dir).map_err(err("creating the log directory"))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.cfg.log_dir.join(format!("{name}.log")))
            .map_err(err("opening its log"))?;
        let mut cmd = tokio::process::Command::new(&self.cfg.worker_binary);
        if !self.cfg.worker_config.as_os_str().is_empty() {
            cmd.arg("--config").arg(&self.cfg.worker_config);
        }
        cmd.arg("run")
            .env(ID_VAR, self.worker_id(n))
            .env("SWITCHYARD_WORKER_WORKER__REGION", self.region.as_str())
            .env("SWITCHYARD_WORKER_WORKER__OPS_LISTEN", self.ops_listen(n))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(err("opening its log"))?)
            .stderr(log)
            .process_group(0)
            .kill_on_drop(false);
        let child = cmd.spawn().map_err(err("starting it"))?;
        let Some(pid) = child.id() else {
            return Err(err("starting it")(std::io::Error::other("exited at once")));
        };
        write_pid(&self.pid_file(n), pid).map_err(err("writing its pid file"))?;
        tracing::info!(worker = %self.worker_id(n), pid, ops = %self.ops_listen(n), "started a worker");
        self.workers.insert(
            n,
            Proc {
                pid,
                child: Some(child),
                stopping: None,
            },
        );
        Ok(())
    }
}

fn worker_id(prefix: &str, region: &Region, n: u32) -> String {
    format!("{prefix}-{region}-{n}")
}

/// Writes a pid file whole: readers never see a partial one.
fn write_pid(path: &Path, pid: u32) -> std::io::Result<()> {
    let tmp = path.with_extension("pid.tmp");
    std::fs::write(&tmp, format!("{pid}\n"))?;
    std::fs::rename(&tmp, path)
}

fn signal(pid: u32, sig: Signal) {
    if let Ok(raw) = i32::try_from(pid)
        && let Err(e) = kill(Pid::from_raw(raw), sig)
    {
        tracing::debug!(pid, error = %e, ?sig, "cannot signal the worker");
    }
}

/// Whether `pid` is a live (not zombie) process whose environment names worker `id`: a pid
/// file can outlive its process, and pids get reused.
fn is_worker(pid: u32, id: &str) -> bool {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let zombie = std::fs::read_to_string(proc_dir.join("stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(") ")
                .map(|(_, rest)| rest.starts_with('Z'))
        })
        .unwrap_or(true);
    if zombie {
        return false;
    }
    let wanted = format!("{ID_VAR}={id}");
    std::fs::read(proc_dir.join("environ"))
        .map(|env| env.split(|&b| b == 0).any(|var| var == wanted.as_bytes()))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    use super::*;

    /// A stand-in `worker` that runs until it is signalled (without an `exec`, so its
    /// process keeps the environment it was started with).
    fn fake_worker(dir: &Path) -> PathBuf {
        let path = dir.join("worker.sh");
        std::fs::write(
            &path,
            "#!/bin/sh\ntrap 'kill $!; exit 0' TERM\nsleep 300 &\nwait\n",
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn config(dir: &Path) -> LocalConfig {
        LocalConfig {
            worker_binary: fake_worker(dir),
            worker_config: PathBuf::new(),
            run_dir: dir.join("run"),
            log_dir: dir.join("log"),
            id_prefix: "t".into(),
            ops_host: "127.0.0.1".into(),
            ops_port_first: 0,
            ops_port_step: 1,
            kill_after: Duration::from_secs(60),
        }
    }

    /// Kills the workers (process groups) a failed test leaves behind.
    struct KillOnDrop(PathBuf);

    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            for entry in std::fs::read_dir(&self.0).into_iter().flatten().flatten() {
                if let Some(pid) = std::fs::read_to_string(entry.path())
                    .ok()
                    .and_then(|p| p.trim().parse::<i32>().ok())
                {
                    let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
                }
            }
        }
    }

    fn region() -> Region {
        Region::new("us-east-1").unwrap()
    }

    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn workers_start_stop_and_are_adopted_by_a_new_actuator() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let _cleanup = KillOnDrop(cfg.run_dir.clone());
        let mut first = LocalActuator::new(region(), cfg.clone());
        first.scale(3).unwrap();
        assert_eq!(first.current(), 3);
        let pid_file = |n: u32| dir.path().join(format!("run/worker-us-east-1-{n}.pid"));
        assert!((1..=3).all(|n| pid_file(n).exists()));
        assert!(dir.path().join("log/worker-us-east-1-2.log").exists());
        // The kernel shows a new process's environment once its exec has set it up.
        let pid = |n: u32| -> u32 {
            std::fs::read_to_string(pid_file(n))
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        };
        until("the workers' exec", || {
            (1..=3).all(|n| is_worker(pid(n), &format!("t-us-east-1-{n}")))
        })
        .await;

        // A restarted autoscaler finds the three running workers.
        drop(first);
        let mut second = LocalActuator::new(region(), cfg);
        assert_eq!(second.current(), 3);
        assert!(!is_worker(pid(3), "t-us-east-1-2"), "another worker's id");

        // Down to one: the highest numbers stop; their pid files go once they have exited.
        second.scale(1).unwrap();
        assert_eq!(second.running(), 1);
        until("workers 2 and 3 to exit", || {
            second.current();
            !pid_file(2).exists() && !pid_file(3).exists()
        })
        .await;
        assert!(pid_file(1).exists());
        // Up again: the free numbers are taken first.
        second.scale(2).unwrap();
        assert!(pid_file(2).exists());
        second.scale(0).unwrap();
        until("every worker to exit", || {
            second.current();
            second.workers.is_empty()
        })
        .await;
    }

    #[test]
    fn stale_and_foreign_pid_files_are_not_adopted() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        std::fs::create_dir_all(&cfg.run_dir).unwrap();
        let run = |f: &str| cfg.run_dir.join(f);
        // This test process is alive but is no worker; pid 0 never is.
        std::fs::write(
            run("worker-us-east-1-1.pid"),
            std::process::id().to_string(),
        )
        .unwrap();
        std::fs::write(run("worker-us-east-1-2.pid"), "0").unwrap();
        std::fs::write(
            run("worker-eu-west-1-1.pid"),
            std::process::id().to_string(),
        )
        .unwrap();
        std::fs::write(run("redis.pid"), "1").unwrap();
        let mut actuator = LocalActuator::new(region(), cfg.clone());
        assert_eq!(actuator.current(), 0);
        assert!(!run("worker-us-east-1-1.pid").exists());
        assert!(!run("worker-us-east-1-2.pid").exists());
        // Other regions' and other programs' pid files are left alone.
        assert!(run("worker-eu-west-1-1.pid").exists());
        assert!(run("redis.pid").exists());
    }
}
