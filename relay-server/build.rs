//! `sqlx::migrate!` embeds the migration files when the relay compiles, and a new file
//! alone does not make Cargo compile it again: the relay would start without it.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed=migrations-postgres");
}
