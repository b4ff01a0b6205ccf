//! A root CA bundle that cannot be read is an error that names it, for every client of the process
//! (what stops a function at start: `retail_sync_aws::settings::sdk_config`). Its own test binary with
//! one test: `SSL_CERT_FILE` is read once per process.

#[test]
fn a_bundle_that_is_not_there_is_an_error_naming_it_for_every_client() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-bundle.pem");
    // SAFETY: the only test of this binary, before any other thread exists. (A certificate directory
    // in the environment would be read as well, and its roots would do.)
    unsafe {
        std::env::set_var("SSL_CERT_FILE", &missing);
        std::env::remove_var("SSL_CERT_DIR");
    }

    let e = retail_sync_http::tls().unwrap_err();
    let text = e.to_string();
    assert!(text.starts_with("cannot set up TLS: "), "{text}");
    assert!(text.contains(&missing.display().to_string()), "{text}");

    let timeouts = retail_sync_http::Timeouts {
        connect: None,
        read: None,
        total: None,
    };
    let e = retail_sync_http::client(timeouts).unwrap_err();
    assert!(matches!(e, retail_sync_http::ClientError::Tls(_)), "{e}");
}
