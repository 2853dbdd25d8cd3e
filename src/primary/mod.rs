//! The primary role: capture committed transactions from the WAL, stage them as LTX
//! files beside the database, upload them in the background.

pub mod capture;
