//! Peak resident memory of a child process, shared by the tests and `make bench`.
#![allow(clippy::unwrap_used)]

use std::process::{Child, ExitStatus};

/// Waits for `child` and returns its exit status and peak RSS in bytes: the kernel's high-water
/// mark of the exec'd image (`VmHWM`), sampled until it exits. `wait4`'s `ru_maxrss` would also
/// count the pages the child shared with its (possibly large) parent between fork and exec.
pub fn wait_measuring_peak_rss(mut child: Child) -> (ExitStatus, u64) {
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        if let Ok(status) = std::fs::read_to_string(&status_file)
            && let Some(kb) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        {
            peak = peak.max(kb * 1024);
        }
        if let Some(status) = child.try_wait().unwrap() {
            return (status, peak);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
