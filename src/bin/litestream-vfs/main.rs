//! `litestream-vfs`: restore and inspect replicas from a shell, with the same code the
//! extension uses (`litestream_vfs::restore`, `storage`, `ltx`).
//!
//! Exit status: 0 on success, 1 when the work failed (storage, checksums, an existing
//! file, a damaged file `verify` found), 2 when the command line is wrong.

// The house rule: `unsafe` only under the library's `src/vfs/`.
#![deny(unsafe_code)]

mod args;
mod format;
mod info_cmd;
mod keygen_cmd;
mod keys;
mod ltx_cmd;
mod progress;
mod rekey_cmd;
mod restore_cmd;
mod store;
mod verify_cmd;

use std::process::ExitCode;

/// Why a command stopped.
#[derive(Debug)]
pub enum Failure {
    /// The command line is wrong: exit status 2 and a hint to `--help`.
    Usage(String),
    /// The work failed: exit status 1.
    Failed(String),
}

pub type CmdResult = Result<(), Failure>;

const USAGE: &str = "\
litestream-vfs: restore and inspect Litestream (LTX v3, and encrypted LTX v4) replicas.

Usage:
  litestream-vfs restore -o PATH [--txid TXID | --timestamp TIME | --time WHEN] [--overwrite] [--key-file PATH | --key HEX] URL
  litestream-vfs ltx [--level N|all] [--json] [--key-file PATH | --key HEX] FILE_OR_URL...
  litestream-vfs info [--json] URL
  litestream-vfs verify [--all] [--json] [--key-file PATH | --key HEX] URL
  litestream-vfs keygen
  litestream-vfs rekey -encrypt-to PUB[,PUB...] [--key-file PATH | --key HEX] [-o OUT [--overwrite]] URL_OR_FILE
  litestream-vfs help [COMMAND]
  litestream-vfs --version

URL is a replica URL as the extension takes it: file:///abs/path, s3://bucket/path?endpoint=..,
gs://bucket/path, abs://[account@]container/path; a local directory is read as file://.
Credentials come from the environment (LITESTREAM_ACCESS_KEY_ID, AWS_ACCESS_KEY_ID, ...);
LITESTREAM_LOG_LEVEL=info|debug shows what the commands do. See docs/cli.md.";

fn main() -> ExitCode {
    litestream_vfs::vfs::terminate_on_broken_pipe();
    litestream_vfs::logging::init();
    let argv: Result<Vec<String>, _> = std::env::args_os().skip(1).map(|a| a.into_string()).collect();
    let result = match argv {
        Ok(argv) => run(&argv),
        Err(bad) => Err(Failure::Usage(format!("argument {bad:?} is not valid UTF-8"))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(m)) => {
            eprintln!("litestream-vfs: {m}\nRun 'litestream-vfs --help' for usage.");
            ExitCode::from(2)
        }
        Err(Failure::Failed(m)) => {
            eprintln!("litestream-vfs: {}", store::with_hint(m));
            ExitCode::from(1)
        }
    }
}

fn run(argv: &[String]) -> CmdResult {
    let (command, rest) = match argv.split_first() {
        Some((c, rest)) => (c.as_str(), rest),
        None => return Err(Failure::Usage("no command given".into())),
    };
    let wants_help = rest.iter().any(|a| matches!(a.as_str(), "-h" | "-help" | "--help"));
    match command {
        "-h" | "-help" | "--help" => help(None),
        "help" => help(rest.first().map(String::as_str)),
        "-version" | "--version" | "version" => {
            println!("litestream-vfs {}", litestream_vfs::VERSION);
            Ok(())
        }
        c @ ("restore" | "ltx" | "info" | "verify" | "keygen" | "rekey") if wants_help => help(Some(c)),
        "restore" => restore_cmd::run(rest),
        "ltx" => ltx_cmd::run(rest),
        "info" => info_cmd::run(rest),
        "verify" => verify_cmd::run(rest),
        "keygen" => keygen_cmd::run(rest),
        "rekey" => rekey_cmd::run(rest),
        other => Err(Failure::Usage(format!(
            "unknown command {other:?}; the commands are restore, ltx, info, verify, keygen and rekey"
        ))),
    }
}

fn help(command: Option<&str>) -> CmdResult {
    let text = match command {
        // `help help`: the general help, which says what `help COMMAND` does.
        None | Some("help") => USAGE,
        Some("restore") => restore_cmd::HELP,
        Some("ltx") => ltx_cmd::HELP,
        Some("info") => info_cmd::HELP,
        Some("verify") => verify_cmd::HELP,
        Some("keygen") => keygen_cmd::HELP,
        Some("rekey") => rekey_cmd::HELP,
        Some(other) => return Err(Failure::Usage(format!("no help for unknown command {other:?}"))),
    };
    println!("{text}");
    Ok(())
}
