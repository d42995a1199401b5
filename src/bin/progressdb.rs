//! The ProgressDB server binary: parse flags, resolve config, run.

use clap::Parser;
use progressdb::config::{Config, Flags};
use progressdb::logging;

fn main() {
    let flags = Flags::parse();
    let config = match Config::resolve(flags) {
        Ok(config) => config,
        Err(err) => {
            logging::error("invalid configuration", &[("error", &err)]);
            std::process::exit(2);
        }
    };
    if let Err(err) = progressdb::server::run(config) {
        logging::error("cannot run", &[("error", &err)]);
        std::process::exit(1);
    }
}
