//! What a server costs, read from /proc: memory as the sum of PSS over the
//! server's process tree (nginx's master and workers, Pushpin's several
//! daemons), CPU as the sum of user and system time over the same tree.

use std::fs;

/// The pid and every descendant of it, found through each process's parent.
pub fn tree(root: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if let Some(ppid) = stat_fields(pid).and_then(|f| f.get(1).and_then(|v| v.parse().ok()))
            {
                parents.push((pid, ppid));
            }
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    found
}

/// Fields of /proc/PID/stat after the command name (which may hold spaces):
/// [0] is the state, [1] the parent pid, [11] utime, [12] stime.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &text[text.rfind(')')? + 2..];
    Some(after.split_whitespace().map(str::to_string).collect())
}

/// Sum of PSS over the tree, in bytes.
pub fn pss_bytes(root: u32) -> u64 {
    tree(root)
        .into_iter()
        .filter_map(|pid| fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok())
        .filter_map(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .sum::<u64>()
        * 1024
}

/// User plus system CPU seconds over the tree.
pub fn cpu_seconds(root: u32) -> f64 {
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    tree(root)
        .into_iter()
        .filter_map(stat_fields)
        .map(|f| {
            let user: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
            let system: f64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
            (user + system) / ticks
        })
        .sum()
}

/// This process's own CPU seconds (the load generator's cost).
pub fn own_cpu_seconds() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Raises this process's open-file soft limit to the hard limit.
pub fn raise_nofile() -> u64 {
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    lim.rlim_cur
}
