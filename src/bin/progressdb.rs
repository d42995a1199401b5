//! The ProgressDB server binary: parse flags, resolve config, run.

use std::path::PathBuf;

use clap::Parser;
use clap::error::ErrorKind;
use progressdb::backup::Target;
use progressdb::config::{Config, Flags, flag_error_line};
use progressdb::logging;

/// Each shard thread allocates and frees on its own; mimalloc keeps that
/// thread-local, where glibc's malloc spent a tenth of a post in its arenas.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status for a configuration error (flag, environment or file).
/// Such errors are one plain line: logging is not configured yet.
const EXIT_CONFIG: i32 = 2;

/// mimalloc's `mi_option_purge_delay` (the same index in its v2 and v3
/// option enums; `libmimalloc-sys` exports no name for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory for reuse instead of returning it to the OS after
/// a second: memtables are allocated and freed 32 MiB at a time, and faulting
/// those pages back in (zeroing 2 MiB huge pages) cost a durable POST
/// about 35 page faults per thousand. The peak stays bounded by the
/// configured memtable and cache sizes. `MIMALLOC_PURGE_DELAY` (read by
/// mimalloc at process start) still wins when set.
fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a process-wide tuning integer that mimalloc reads
        // atomically; any value is valid.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

fn main() {
    keep_freed_memory();
    match std::env::args().nth(1).as_deref() {
        Some("backup") => {
            return exit_with(backup(BackupArgs::parse_from(std::env::args().skip(1))));
        }
        Some("restore") => {
            return exit_with(restore(RestoreArgs::parse_from(std::env::args().skip(1))));
        }
        _ => {}
    }
    let flags = match Flags::try_parse() {
        Ok(flags) => flags,
        Err(err) => match err.kind() {
            ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => err.exit(),
            _ => {
                eprintln!("progressdb: {}", flag_error_line(&err));
                std::process::exit(EXIT_CONFIG);
            }
        },
    };
    let print_config = flags.print_config;
    let config = match Config::resolve(flags) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("progressdb: {err}");
            std::process::exit(EXIT_CONFIG);
        }
    };
    if print_config {
        print!("{}", config.render_effective());
        return;
    }
    if let Err(err) = progressdb::server::run(config) {
        logging::error("cannot run", &[("error", &err)]);
        std::process::exit(1);
    }
}

/// `progressdb backup`: copies a stopped server's data directory.
#[derive(Parser)]
#[command(
    name = "progressdb backup",
    about = "Back up the data directory of a stopped server (a running one: POST /admin/v1/backups)"
)]
struct BackupArgs {
    /// The data directory.
    #[arg(long, value_name = "DIR")]
    db: PathBuf,
    /// Where to write the backup: file:///absolute/dir (new or empty).
    #[arg(long, value_name = "TARGET")]
    to: String,
}

/// `progressdb restore`: rebuilds a data directory from a backup.
#[derive(Parser)]
#[command(
    name = "progressdb restore",
    about = "Rebuild a data directory from a backup, after checking it whole"
)]
struct RestoreArgs {
    /// The backup: file:///absolute/dir.
    #[arg(long, value_name = "TARGET")]
    from: String,
    /// The data directory to create; it must not exist or be empty.
    #[arg(long, value_name = "DIR")]
    db: PathBuf,
}

fn backup(args: BackupArgs) -> Result<String, String> {
    let target = Target::parse(&args.to)?;
    let manifest = progressdb::backup::offline::backup(&args.db, &target)?;
    let items: u64 = manifest.files.iter().map(|file| file.items).sum();
    Ok(format!(
        "backed up {} shard(s), {items} item(s), to {}",
        manifest.shards,
        target.describe()
    ))
}

fn restore(args: RestoreArgs) -> Result<String, String> {
    let target = Target::parse(&args.from)?;
    let restored = progressdb::backup::restore::restore(&target, &args.db)?;
    Ok(format!(
        "restored {} shard(s), {} item(s), into {}",
        restored.shards,
        restored.items,
        args.db.display()
    ))
}

fn exit_with(result: Result<String, String>) {
    match result {
        Ok(done) => println!("progressdb: {done}"),
        Err(err) => {
            eprintln!("progressdb: {err}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    /// Pins the option index: mimalloc v3's default purge delay is 1000 ms,
    /// a value no neighbouring option has.
    #[test]
    fn the_purge_delay_option_index_is_right() {
        // SAFETY: reads process-wide tuning integers.
        let (delay, after) = unsafe {
            (
                libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY),
                libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY + 1),
            )
        };
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(delay, 1000);
        }
        assert_eq!(after, 0, "use_numa_nodes follows purge_delay");
    }
}
