//! Resource usage of a running process from /proc: resident memory and open descriptors,
//! sampled once or continuously (peak) while a load runs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// One reading of a process's resources.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// VmRSS in KiB.
    pub rss_kib: u64,
    /// Entries in /proc/PID/fd.
    pub fds: usize,
}

impl Usage {
    /// Resident memory in MiB, for reports.
    pub fn rss_mib(&self) -> f64 {
        self.rss_kib as f64 / 1024.0
    }
}

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RSS {:.1} MiB, {} fds", self.rss_mib(), self.fds)
    }
}

/// Reads VmRSS and the descriptor count of `pid`; `None` once the process is gone.
pub fn usage(pid: u32) -> Option<Usage> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some(Usage { rss_kib, fds })
}

/// CPU time (user + system, in clock ticks) `pid` has used; 0 once it is gone.
pub fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // The fields after the command name (which may hold spaces): utime is the 12th.
            let fields: Vec<u64> = s
                .rsplit(')')
                .next()?
                .split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|v| v.parse().ok())
                .collect();
            Some(fields.iter().sum())
        })
        .unwrap_or(0)
}

/// Samples several processes on a background thread and keeps each one's peak RSS and
/// peak descriptor count (each maximum on its own; they need not coincide).
pub struct PeakSampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Usage>>>,
}

impl PeakSampler {
    /// Starts sampling `pids` every `every`.
    pub fn start(pids: Vec<u32>, every: Duration) -> PeakSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peaks = vec![Usage::default(); pids.len()];
            // Bounded: at most an hour of samples even if nobody stops us.
            for _ in 0..(3_600_000 / every.as_millis().max(1)) {
                for (peak, &pid) in peaks.iter_mut().zip(&pids) {
                    if let Some(u) = usage(pid) {
                        peak.rss_kib = peak.rss_kib.max(u.rss_kib);
                        peak.fds = peak.fds.max(u.fds);
                    }
                }
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                std::thread::sleep(every);
            }
            peaks
        });
        PeakSampler {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling (after one last sample) and returns the peaks, in `pids` order.
    pub fn finish(mut self) -> Vec<Usage> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for PeakSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Raises this process's RLIMIT_NOFILE soft limit to the hard limit (children such as nexd
/// inherit it) and returns the new soft limit.
#[allow(unsafe_code)]
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass, which outlives the calls.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}
