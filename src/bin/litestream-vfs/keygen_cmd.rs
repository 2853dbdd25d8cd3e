//! `litestream-vfs keygen`: a new X25519 key pair, printed as `ltx keygen` prints it.

use litestream_vfs::ltx::crypto::{OsEntropy, PrivateKey};

use crate::{CmdResult, Failure};

pub const HELP: &str = "\
Usage: litestream-vfs keygen

Prints a new X25519 key pair for encrypted replicas (LTX v4), hex, as `ltx keygen` does:

  public:  <64 hex digits>   give it to encrypt_to= of the primaries that write for you
  private: <64 hex digits>   encryption_key= / encryption_key_file= of the primary and of
                             every replica or restore that reads

Keep the private key secret: whoever holds it reads every file encrypted to it, and a
replica whose every recipient key is lost cannot be restored by anyone.";

pub fn run(argv: &[String]) -> CmdResult {
    if let Some(extra) = argv.first() {
        return Err(Failure::Usage(format!("keygen takes no arguments, got {extra:?}")));
    }
    let key = PrivateKey::generate(&mut OsEntropy::default()).map_err(|e| Failure::Failed(e.to_string()))?;
    println!("public:  {}", key.public_key());
    println!("private: {}", key.to_hex().as_str());
    Ok(())
}
