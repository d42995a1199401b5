//! The ProgressDB server binary: parse flags, resolve config, run.

use clap::Parser;
use clap::error::ErrorKind;
use progressdb::config::{Config, Flags, flag_error_line};
use progressdb::logging;

/// Each shard thread allocates and frees on its own; mimalloc keeps that
/// thread-local, where glibc's malloc spent a tenth of a post in its arenas.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status for a configuration error (flag, environment or file).
/// Such errors are one plain line: logging is not configured yet.
const EXIT_CONFIG: i32 = 2;

fn main() {
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
