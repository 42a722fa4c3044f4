//! Process footprint from procfs: resident memory (`VmRSS` in `/proc/<pid>/status`) and CPU
//! time (`utime + stime` in `/proc/<pid>/stat`, in clock ticks).

use crate::error::{BenchError, Ctx, failed};

/// Resident set size in KiB.
pub fn rss_kib(pid: u32) -> Result<u64, BenchError> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ctx("reading status")?;
    parse_vm_rss(&text).ok_or_else(|| failed("VmRSS", format!("not in /proc/{pid}/status")))
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `utime + stime` of the process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Result<u64, BenchError> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ctx("reading stat")?;
    parse_cpu_ticks(&text).ok_or_else(|| failed("stat", format!("cannot parse /proc/{pid}/stat")))
}

fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is fields[0]; utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 when unavailable).
pub fn clock_ticks_per_sec() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_procfs_lines() {
        assert_eq!(parse_vm_rss("Name:\tx\nVmRSS:\t   12345 kB\nVmSwap: 0 kB\n"), Some(12345));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        let stat = "4242 (lightcl (x) y) S 1 2 3 4 5 6 7 8 9 10 111 222 0 0 20 0 4 0";
        assert_eq!(parse_cpu_ticks(stat), Some(333));
    }

    #[test]
    fn reads_our_own_process() {
        let me = std::process::id();
        assert!(rss_kib(me).unwrap() > 0);
        assert!(cpu_ticks(me).is_ok());
    }
}
