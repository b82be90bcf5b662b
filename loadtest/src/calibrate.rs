//! How fast this host is right now, in the two kinds of work the intake's CPU goes to: signing
//! a webhook-sized body with HMAC-SHA256 on one core (user space), and a round trip of one byte
//! over loopback TCP between two threads (system calls, wake-ups, scheduling — the kernel's
//! share).
//!
//! A shared virtual machine can be markedly slower on one day than on another at the same
//! commit; `make bench` measures these before and after its runs, so that figures measured
//! on different days can be told apart from a change in Switchyard.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The size of the signed body: about the mean of the benchmark's webhook payloads (10,206 B).
pub const BODY_BYTES: usize = 10_240;

/// What one calibration measured.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Calibration {
    /// Bytes of each signed body.
    pub body_bytes: usize,
    /// Signatures computed.
    pub signatures: u64,
    /// Mean time of one HMAC-SHA256 of the body, in microseconds.
    pub hmac_us: f64,
    /// Round trips made.
    pub round_trips: u64,
    /// Mean time of one loopback TCP round trip of one byte, in microseconds.
    pub round_trip_us: f64,
}

impl Calibration {
    /// One line: what was measured and how long each took.
    pub fn human(&self) -> String {
        format!(
            "HMAC-SHA256 of {} KB {:.2} µs; loopback TCP round trip {:.1} µs\n",
            self.body_bytes / 1024,
            self.hmac_us,
            self.round_trip_us
        )
    }
}

/// Spends about `each` on each of the two measurements (blocking: run it off the runtime).
pub fn measure(each: Duration) -> std::io::Result<Calibration> {
    let (signatures, hmac_us) = hmac_rate(each);
    let (round_trips, round_trip_us) = round_trips(each)?;
    Ok(Calibration {
        body_bytes: BODY_BYTES,
        signatures,
        hmac_us,
        round_trips,
        round_trip_us,
    })
}

/// Mean microseconds per unit of `done` units over `elapsed`.
#[allow(clippy::cast_precision_loss, reason = "counts stay far below 2^52")]
fn mean_us(elapsed: Duration, done: u64) -> f64 {
    elapsed.as_secs_f64() * 1e6 / done.max(1) as f64
}

fn hmac_rate(each: Duration) -> (u64, f64) {
    // Not all zeros, so that nothing about the input is special.
    let body: Vec<u8> = (0..BODY_BYTES).map(|i| (i % 251) as u8).collect();
    let mut done = 0u64;
    let mut sink = 0u8;
    let start = Instant::now();
    // Checking the clock every 64 signatures keeps its cost out of the figure.
    while start.elapsed() < each {
        for _ in 0..64 {
            let mut mac =
                Hmac::<Sha256>::new_from_slice(b"calibration").expect("HMAC takes any key");
            mac.update(&body);
            sink ^= mac.finalize().into_bytes()[0];
        }
        done += 64;
    }
    let elapsed = start.elapsed();
    std::hint::black_box(sink);
    (done, mean_us(elapsed, done))
}

fn round_trips(each: Duration) -> std::io::Result<(u64, f64)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut conn, _) = listener.accept()?;
        conn.set_nodelay(true)?;
        let mut byte = [0u8; 1];
        // Echoes until the other end closes.
        while conn.read(&mut byte)? == 1 {
            conn.write_all(&byte)?;
        }
        Ok(())
    });
    let mut conn = TcpStream::connect(addr)?;
    conn.set_nodelay(true)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut byte = [7u8; 1];
    let mut done = 0u64;
    let start = Instant::now();
    while start.elapsed() < each {
        for _ in 0..16 {
            conn.write_all(&byte)?;
            conn.read_exact(&mut byte)?;
        }
        done += 16;
    }
    let elapsed = start.elapsed();
    conn.shutdown(Shutdown::Both)?;
    drop(conn);
    echo.join()
        .map_err(|_| std::io::Error::other("the echo thread panicked"))??;
    Ok((done, mean_us(elapsed, done)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_calibration_measures_both_kinds_of_work() {
        let c = measure(Duration::from_millis(50)).unwrap();
        assert_eq!(c.body_bytes, BODY_BYTES);
        assert!(c.signatures >= 64 && c.round_trips >= 16, "{c:?}");
        assert!(c.hmac_us > 0.0 && c.round_trip_us > 0.0, "{c:?}");
        // The mean is what the counts say: time over count, within the measured span.
        assert!(c.hmac_us * c.signatures as f64 >= 49_999.0, "{c:?}");
        assert!(c.round_trip_us * c.round_trips as f64 >= 49_999.0, "{c:?}");
        let line = c.human();
        assert!(line.starts_with("HMAC-SHA256 of 10 KB "), "{line}");
        assert!(line.contains("loopback TCP round trip"), "{line}");
    }
}
