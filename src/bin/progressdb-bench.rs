//! `progressdb-bench`: HTTP/1.1 load generator for ProgressDB-compatible
//! servers. Parses flags, runs [`progressdb::loadgen::run`], prints the
//! table; everything else lives in `src/loadgen/`.

use clap::Parser;
use progressdb::loadgen::{Options, run};

fn main() {
    let options = Options::parse();
    match run(&options) {
        Ok(report) => print!("{}", report.table()),
        Err(err) => {
            eprintln!("progressdb-bench: {err}");
            std::process::exit(2);
        }
    }
}
