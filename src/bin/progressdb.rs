//! The ProgressDB server binary: parse flags, resolve config, run.

use clap::Parser;
use progressdb::config::{Config, Flags};

fn main() {
    let flags = Flags::parse();
    let config = match Config::resolve(flags) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("progressdb: {err}");
            std::process::exit(2);
        }
    };
    if let Err(err) = progressdb::server::run(config) {
        eprintln!("progressdb: {err}");
        std::process::exit(1);
    }
}
