//! `litestream-vfs rekey`: give an encrypted replica's files (or one local .ltx file) to
//! a new set of recipients.

use std::path::Path;

use litestream_vfs::ltx::crypto::{OsEntropy, PrivateKey, PublicKey};
use litestream_vfs::ltx::{rekey, Header, Rekeyed};
use litestream_vfs::runtime::block_on;

use crate::args::{parse, Flag, Parsed};
use crate::keys::{key, KEY_FLAGS};
use crate::{store, CmdResult, Failure};

pub const HELP: &str = "\
Usage: litestream-vfs rekey -encrypt-to PUB[,PUB...] [-key HEX | -key-file PATH] [-o OUT [-overwrite]] URL_OR_FILE

Gives every encrypted file of the replica at URL (or the local .ltx FILE, written to OUT)
to the recipients -encrypt-to lists, opening each with the private key (-key, -key-file,
else LITESTREAM_ENCRYPTION_KEY / LITESTREAM_ENCRYPTION_KEY_FILE).

With as many recipients as the file already has, only its content key is wrapped again:
pages, index and tag stay as they are (one download and one upload per file). With
another number of recipients the header changes, which every page is bound to: the file
is decoded and encrypted again under a new content key. Plaintext files are left alone
(they age out by retention). Each file is verified before it is rewritten.

Old keys still open any copy of an old file that someone kept: rekeying decides who can
read the replica from now on. Run it while no primary writes to the replica (compaction
and retention replace and delete files). Keep one of the new private keys: without it
nobody can restore the replica. Files the key given does not open are left as they are
and named (exit status 1): rekey them with a key they are encrypted to.

Options:
  -encrypt-to PUB,...  the new recipients' public keys, hex (required)
  -key HEX             a private key the files are encrypted to (visible to other users
                       in /proc/<pid>/cmdline and kept in shell history: prefer -key-file)
  -key-file PATH       a file holding it (not readable by every user)
  -o, -output OUT      for a local FILE: where to write the rekeyed file (required); an
                       existing OUT is refused, as restore refuses an existing PATH
  -overwrite, -force   replace OUT if it exists
  -dry-run             say what would change, change nothing";

pub fn run(argv: &[String]) -> CmdResult {
    let mut flags: Vec<Flag> = KEY_FLAGS.to_vec();
    flags.extend([
        Flag {
            names: &["encrypt-to"],
            value: true,
        },
        Flag {
            names: &["o", "output"],
            value: true,
        },
        Flag {
            names: &["dry-run"],
            value: false,
        },
        Flag {
            names: &["overwrite", "force"],
            value: false,
        },
    ]);
    let p = parse(argv, &flags).map_err(Failure::Usage)?;
    let target = match p.positional.as_slice() {
        [t] => t.as_str(),
        _ => return Err(Failure::Usage("rekey takes one replica URL or .ltx file".into())),
    };
    let recipients = PublicKey::parse_list(
        p.value("encrypt-to")
            .ok_or_else(|| Failure::Usage("rekey needs -encrypt-to PUB[,PUB...]".into()))?,
    )
    .map_err(|e| Failure::Usage(format!("-encrypt-to: {e}")))?;
    if recipients.is_empty() {
        return Err(Failure::Usage("-encrypt-to lists no public key".into()));
    }
    // A key listed twice is one recipient: the extension's encrypt_to= drops repeats,
    // and rekey wrote a block of three for `-encrypt-to B,A,B` (a keys tester).
    let mut recipients = recipients;
    let mut seen = std::collections::HashSet::new();
    recipients.retain(|r| seen.insert(r.to_hex()));
    let key = key(&p)?.ok_or_else(|| {
        Failure::Usage("rekey needs the private key the files are encrypted to: -key or -key-file".into())
    })?;
    check_recipients(&p, &key, &recipients)?;
    let path = Path::new(target);
    if !target.contains("://") && path.is_file() {
        let out = p
            .value("o")
            .ok_or_else(|| Failure::Usage("rekey of a local file needs -o OUT".into()))?;
        let overwrite = p.has("overwrite");
        // Checked before the work (a dry run included, which says what the real run
        // would do): an existing OUT, often an unrelated file, was silently replaced
        // while restore refused its existing -o (a documentation tester, t40).
        if Path::new(out).is_dir() {
            return Err(Failure::Failed(format!(
                "{out} is a directory; -o names the file to write"
            )));
        }
        if !overwrite && std::fs::symlink_metadata(out).is_ok() {
            return Err(exists(out));
        }
        let bytes = std::fs::read(path).map_err(|e| Failure::Failed(format!("{target}: {e}")))?;
        let (new, how) = rekey(&bytes, &key, &recipients, &mut OsEntropy::default())
            .map_err(|e| Failure::Failed(format!("{target}: {e}")))?;
        if !p.has("dry-run") {
            write_out(out, &new, overwrite)?;
        }
        println!("{target}: {}", describe(how));
        return Ok(());
    }
    let store = store::open(target)?;
    let mut counts = [0usize; 3]; // rewrapped, resealed, plaintext
                                  // Files this key does not open: left as they are, the rest still rekeyed. A replica
                                  // left by a rotation that skipped rekey holds files to the old key only and files
                                  // to the new one only; stopping at the first of the second kind made its repair a
                                  // loop of runs with one key and the other.
    let mut not_ours: Vec<String> = Vec::new();
    for level in 0..=9u8 {
        let files = block_on(store.list(level)).map_err(|e| Failure::Failed(e.to_string()))?;
        for f in files {
            let name = format!("level {level} file {:016x}-{:016x}", f.min_txid, f.max_txid);
            let bytes = block_on(store.get(level, f.min_txid, f.max_txid))
                .map_err(|e| Failure::Failed(format!("{name}: {e}")))?;
            let header = Header::decode(&bytes).map_err(|e| Failure::Failed(format!("{name}: {e}")))?;
            if !header.is_encrypted() {
                counts[2] += 1;
                continue;
            }
            let (new, how) = match rekey(&bytes, &key, &recipients, &mut OsEntropy::default()) {
                Ok(done) => done,
                Err(e @ litestream_vfs::ltx::Error::NotARecipient { .. }) => {
                    eprintln!("{name}: left as it is: {e}");
                    not_ours.push(name);
                    continue;
                }
                Err(e) => return Err(Failure::Failed(format!("{name}: {e}"))),
            };
            counts[usize::from(how == Rekeyed::Resealed)] += 1;
            if !p.has("dry-run") {
                block_on(store.put(level, f.min_txid, f.max_txid, new.into(), header.timestamp_ms))
                    .map_err(|e| Failure::Failed(format!("{name}: {e}")))?;
            }
            eprintln!("{name}: {}", describe(how));
        }
    }
    if counts.iter().sum::<usize>() + not_ours.len() == 0 {
        // As info, restore and verify say: a mistyped prefix is not a rekeyed replica.
        return Err(Failure::Failed(format!(
            "replica {} holds no LTX files",
            store.describe()
        )));
    }
    println!(
        "{}{} files rewrapped, {} re-encrypted, {} plaintext left as they are",
        if p.has("dry-run") { "dry run: " } else { "" },
        counts[0],
        counts[1],
        counts[2]
    );
    if !not_ours.is_empty() {
        return Err(Failure::Failed(format!(
            "{} file(s) are not encrypted to the key given and were left as they are ({}): \
             rekey them with a key they are encrypted to (run rekey again with it)",
            not_ours.len(),
            not_ours.join(", ")
        )));
    }
    Ok(())
}

/// Refuses an `-encrypt-to` list that holds the private key given (any 32 bytes are an
/// X25519 public key, so it was accepted and every file went to a key nobody holds the
/// private half of: no key opened the replica afterwards; an operations tester, t5), and
/// warns when the list leaves out the key given (a rotation does that on purpose). The
/// messages name the key given by its public half only.
fn check_recipients(p: &Parsed, key: &PrivateKey, recipients: &[PublicKey]) -> CmdResult {
    let given = key_source(p);
    let own = key.public_key();
    for (i, r) in recipients.iter().enumerate() {
        // Compared through the public keys: the value, read as a private key, gives the
        // same public key as the key given (equal bytes, or equal but for the bits X25519
        // ignores), without handling the private bytes here.
        if PrivateKey::from_bytes(*r.as_bytes()).public_key() == own {
            let which = if recipients.len() == 1 {
                "the value".to_string()
            } else {
                format!("public key {} of the list", i + 1)
            };
            return Err(Failure::Usage(format!(
                "-encrypt-to: {which} is the private key given with {given}, not a public key \
                 (not shown here): give the recipients' public keys (`litestream-vfs keygen` prints \
                 both halves of a pair, `public:` first); the public key of the key given is {own}"
            )));
        }
    }
    if !recipients.contains(&own) {
        eprintln!(
            "warning: -encrypt-to does not include the public key of the key given with {given} \
             ({own}): after this rekey{} that key no longer opens the files rewritten (as a \
             rotation intends); keep a private key of the new recipients, or add {own} to \
             -encrypt-to to keep this one",
            if p.has("dry-run") {
                " (run without -dry-run)"
            } else {
                ""
            }
        );
    }
    Ok(())
}

/// Where the private key came from, for messages.
fn key_source(p: &Parsed) -> &'static str {
    if p.value("key").is_some() {
        "-key"
    } else if p.value("key-file").is_some() {
        "-key-file"
    } else if std::env::var_os("LITESTREAM_ENCRYPTION_KEY").is_some() {
        "LITESTREAM_ENCRYPTION_KEY"
    } else {
        "LITESTREAM_ENCRYPTION_KEY_FILE"
    }
}

fn exists(out: &str) -> Failure {
    Failure::Failed(format!(
        "{out} already exists; write to a new path, or give -overwrite to replace it"
    ))
}

/// Writes `bytes` to `out`; without `overwrite` the file is created only if nothing is
/// there, so that a file appearing since the check above is not replaced either.
fn write_out(out: &str, bytes: &[u8], overwrite: bool) -> CmdResult {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if overwrite {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(out).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => exists(out),
        _ => Failure::Failed(format!("{out}: {e}")),
    })?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| Failure::Failed(format!("{out}: {e}")))
}

fn describe(how: Rekeyed) -> &'static str {
    match how {
        Rekeyed::Rewrapped => "content key wrapped to the new recipients (pages unchanged)",
        Rekeyed::Resealed => "re-encrypted under a new content key (recipient count changed)",
    }
}
