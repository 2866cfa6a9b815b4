use std::os::unix::fs::PermissionsExt;

use super::cluster::{find_bin, running_postmaster, version_of, Owner};
use super::*;

#[test]
fn the_configured_url_comes_first() {
    let options = Options::from_lookup(|name| match name {
        "DATABASE_URL" => Some("postgres://a@b/c".into()),
        "PLINTH_LOCAL_POSTGRES" => Some("off".into()),
        _ => None,
    })
    .unwrap();
    assert_eq!(
        options.configured,
        Some(("DATABASE_URL", "postgres://a@b/c".into()))
    );
    assert_eq!(options.local_server, None);
    let options = Options::from_lookup(|name| match name {
        "DATABASE_URL" => Some("postgres://a@b/c".into()),
        "PLINTH_DATABASE_URL" => Some("postgres://d@e/f".into()),
        _ => None,
    })
    .unwrap();
    assert_eq!(options.configured.unwrap().0, "PLINTH_DATABASE_URL");
    assert_eq!(options.local_server.as_deref(), Some("127.0.0.1:5432"));
    assert_eq!(options.data_dir, PathBuf::from("data/postgres"));
    assert!(Options::from_lookup(|n| (n == "PLINTH_PG_PORT").then(|| "x".into())).is_err());
}

#[test]
fn missing_programs_say_what_to_install() {
    let err = find_bin(Some(Path::new("/nonexistent")))
        .unwrap_err()
        .to_string();
    for what in [
        "apt install postgresql",
        "dnf install",
        "brew install",
        "PLINTH_DATABASE_URL",
    ] {
        assert!(err.contains(what), "{err}");
    }
}

#[test]
fn versions_order_the_candidates() {
    assert_eq!(version_of(Path::new("/usr/lib/postgresql/15/bin")), 15);
    assert_eq!(
        version_of(Path::new("/opt/homebrew/opt/postgresql@17/bin")),
        17
    );
    assert_eq!(version_of(Path::new("/usr/bin")), 0);
}

#[test]
fn the_tests_cluster_leaves_a_checkout_user_postgres_cannot_enter() {
    let home = tempfile::tempdir().unwrap();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let wanted = home.path().join("target/test-postgres");
    let chosen = test_cluster_dir(&wanted);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        assert!(chosen.starts_with(std::env::temp_dir()), "{chosen:?}");
        assert!(chosen.to_string_lossy().contains("plinth-test-postgres-"));
        assert!(Owner::for_cluster(&chosen).is_ok());
    } else {
        assert_eq!(chosen, wanted);
    }
}

/// A checkout whose target/ is a link into a directory user postgres cannot enter (as
/// `.ci/run` keeps it in ~/.cache) is no place for the cluster either.
#[test]
fn the_tests_cluster_leaves_a_link_into_a_directory_user_postgres_cannot_enter() {
    let home = tempfile::tempdir().unwrap();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::create_dir(home.path().join("target")).unwrap();
    let checkout = tempfile::tempdir().unwrap();
    std::fs::set_permissions(checkout.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink(home.path().join("target"), checkout.path().join("target")).unwrap();
    let wanted = checkout.path().join("target/test-postgres");
    assert_eq!(
        real_path(&wanted),
        std::fs::canonicalize(home.path())
            .unwrap()
            .join("target/test-postgres")
    );
    let chosen = test_cluster_dir(&wanted);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        assert!(chosen.starts_with(std::env::temp_dir()), "{chosen:?}");
    } else {
        assert_eq!(chosen, wanted);
    }
}

#[test]
fn a_stale_lock_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("postmaster.pid"), "999999999\n").unwrap();
    assert_eq!(running_postmaster(dir.path()), None);
    assert!(!dir.path().join("postmaster.pid").exists());
}
