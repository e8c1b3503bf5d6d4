//! The servers' CPU time and memory from /proc, summed over their processes.

use support::procfs::proc_stat_fields;

use crate::report::command_line;

/// User plus system CPU time of the processes so far, in clock ticks.
pub fn cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|pid| {
            let fields = proc_stat_fields(*pid)?;
            let user: u64 = fields.get(11)?.parse().ok()?;
            let system: u64 = fields.get(12)?.parse().ok()?;
            Some(user + system)
        })
        .sum()
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux).
pub fn clock_ticks_per_second() -> f64 {
    command_line("getconf", &["CLK_TCK"])
        .and_then(|s| s.parse().ok())
        .unwrap_or(100.0)
}

/// Proportional set size in KiB: shared pages (nginx's cache zone, mapped by
/// every worker) are divided among the processes that map them, so the sum
/// over nginx's processes is its real footprint.
pub fn pss_kib(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|pid| {
            let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
            rollup.lines().find_map(|line| {
                let rest = line.strip_prefix("Pss:")?;
                rest.split_whitespace().next()?.parse::<u64>().ok()
            })
        })
        .sum()
}
