//! CPU used by the processes under test during a run, from `/proc/<pid>/stat` (user plus
//! system time of the process and of its direct children, so that a PostgreSQL postmaster
//! stands for its backends), and by the whole machine, from `/proc/stat`. On a small
//! machine the load generator, the server and its dependencies share the cores; this says
//! who used them, and how much went to processes not watched.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// CPU use over a run.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CpuUse {
    /// CPU seconds used.
    pub cpu_s: f64,
    /// CPU seconds per second of the run: 1.0 is one core busy all the time.
    pub cores: f64,
}

/// A process to watch, by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watched {
    pub name: String,
    pub pid: u32,
}

impl std::str::FromStr for Watched {
    type Err = String;

    /// `name=pid`; `self` for this process.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, pid) = s
            .split_once('=')
            .ok_or_else(|| format!("expected name=pid, got {s:?}"))?;
        let pid = if pid == "self" {
            std::process::id()
        } else {
            pid.parse()
                .map_err(|_| format!("{pid:?} is not a process id"))?
        };
        if name.is_empty() {
            return Err("the name is empty".into());
        }
        Ok(Self {
            name: name.to_owned(),
            pid,
        })
    }
}

/// The clock ticks per second of `/proc` times; 100 on every Linux this runs on.
const TICKS_PER_SECOND: f64 = 100.0;

/// `(ppid, utime + stime)` of a process, in ticks.
fn stat(pid: u32) -> Option<(u32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: split after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ppid(1) … utime(11) stime(12).
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

/// Ticks used by `pid` and its live direct children.
fn ticks_of(pid: u32, all: &[(u32, u32, u64)]) -> u64 {
    all.iter()
        .filter(|(p, ppid, _)| *p == pid || *ppid == pid)
        .map(|(_, _, t)| t)
        .sum()
}

/// Busy ticks of the whole machine (every CPU): all but idle and I/O wait.
fn machine_busy() -> u64 {
    let Ok(text) = std::fs::read_to_string("/proc/stat") else {
        return 0;
    };
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return 0;
    };
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| t)
        .sum()
}

/// The name the whole machine is reported under.
pub const MACHINE: &str = "machine (all processes)";

fn snapshot() -> Vec<(u32, u32, u64)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| stat(pid).map(|(ppid, t)| (pid, ppid, t)))
        .collect()
}

/// CPU counters at the start of a run.
#[derive(Debug)]
pub struct Meter {
    watched: Vec<Watched>,
    start: Instant,
    ticks: Vec<u64>,
    machine: u64,
}

impl Meter {
    pub fn start(watched: &[Watched]) -> Self {
        let all = if watched.is_empty() {
            Vec::new()
        } else {
            snapshot()
        };
        Self {
            watched: watched.to_vec(),
            start: Instant::now(),
            ticks: watched.iter().map(|w| ticks_of(w.pid, &all)).collect(),
            machine: machine_busy(),
        }
    }

    /// CPU used since [`Meter::start`] by each watched process, and by the whole machine
    /// (under [`MACHINE`]). Children that ended during the run are not counted.
    pub fn finish(&self) -> BTreeMap<String, CpuUse> {
        if self.watched.is_empty() {
            return BTreeMap::new();
        }
        let all = snapshot();
        let wall = self.start.elapsed().as_secs_f64().max(1e-9);
        #[allow(
            clippy::cast_precision_loss,
            reason = "tick counts stay far below 2^52"
        )]
        let machine = machine_busy().saturating_sub(self.machine) as f64 / TICKS_PER_SECOND;
        let mut used: BTreeMap<String, CpuUse> = self
            .watched
            .iter()
            .zip(&self.ticks)
            .map(|(w, before)| {
                #[allow(
                    clippy::cast_precision_loss,
                    reason = "tick counts stay far below 2^52"
                )]
                let cpu_s = ticks_of(w.pid, &all).saturating_sub(*before) as f64 / TICKS_PER_SECOND;
                (
                    w.name.clone(),
                    CpuUse {
                        cpu_s,
                        cores: cpu_s / wall,
                    },
                )
            })
            .collect();
        used.insert(
            MACHINE.to_owned(),
            CpuUse {
                cpu_s: machine,
                cores: machine / wall,
            },
        );
        used
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watched_processes_parse_from_name_and_pid() {
        let w: Watched = "cp=42".parse().unwrap();
        assert_eq!(
            w,
            Watched {
                name: "cp".into(),
                pid: 42
            }
        );
        let me: Watched = "gen=self".parse().unwrap();
        assert_eq!(me.pid, std::process::id());
        assert!("42".parse::<Watched>().is_err());
        assert!("cp=x".parse::<Watched>().is_err());
    }

    #[test]
    fn this_process_uses_some_cpu() {
        let me = std::process::id();
        assert!(stat(me).is_some());
        let meter = Meter::start(&[Watched {
            name: "me".into(),
            pid: me,
        }]);
        let mut x = 0_u64;
        let until = Instant::now() + std::time::Duration::from_millis(60);
        while Instant::now() < until {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        let used = meter.finish();
        assert!(used["me"].cpu_s >= 0.0);
        assert!(used[MACHINE].cpu_s >= used["me"].cpu_s - 0.02);
        assert!(x > 0);
    }
}
