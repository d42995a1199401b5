//! What every benchmark prints about the machine it ran on.

/// `"<cpu model>; <n> cores; kernel <release>"`.
pub fn describe() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map_or_else(
            || "unknown CPU".into(),
            |(_, model)| model.trim().to_owned(),
        );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{model}; {cores} cores; kernel {}", kernel.trim())
}
