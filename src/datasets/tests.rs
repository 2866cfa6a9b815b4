use super::*;

fn table(csv: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.csv");
    std::fs::write(&path, csv).unwrap();
    (dir, path)
}

#[test]
fn kinds_missing_values_and_profile() {
    let (_d, path) = table("id,x,colour\n1,1.5,red\n2,,blue\n3,NaN,red\n4,4.5,\n");
    let d = describe(&path, Format::Csv, Some("id")).unwrap();
    assert_eq!(d.rows, 4);
    let kinds: Vec<Kind> = d.schema.iter().map(|c| c.kind).collect();
    assert_eq!(kinds, vec![Kind::Number, Kind::Number, Kind::Text]);
    let x = &d.profile["columns"]["x"];
    assert_eq!(x["count"], 2);
    assert_eq!(x["missing"], 2);
    assert_eq!(x["mean"], 3.0);
    assert_eq!(x["p50"], 3.0);
    let colour = &d.profile["columns"]["colour"];
    assert_eq!(colour["missing"], 1);
    assert_eq!(colour["top"][0], json!(["red", 2]));
}

#[test]
fn bad_keys_and_records_are_named() {
    let (_d, path) = table("id,x\n1,1\n2,2\n1,3\n");
    let e = describe(&path, Format::Csv, Some("id")).err().unwrap();
    assert!(e.contains("\"1\" twice (line 2 and 4)"), "{e}");
    let e = describe(&path, Format::Csv, Some("nope")).err().unwrap();
    assert!(e.contains("key column \"nope\" is not in the file"), "{e}");
    let (_d, path) = table("id,x\n1,1\n2\n");
    let e = describe(&path, Format::Csv, None).err().unwrap();
    assert!(e.contains("Line 3 has 1 cells"), "{e}");
    let (_d, path) = table("a,a\n1,2\n");
    assert!(describe(&path, Format::Csv, None)
        .err()
        .unwrap()
        .contains("appears more than once"));
}

#[test]
fn quantiles_match_numpy() {
    // numpy.quantile([1, 2, 3, 4, 10], [0.05, 0.5, 0.95]) = [1.2, 3.0, 8.8]
    let s = [1.0, 2.0, 3.0, 4.0, 10.0];
    assert!((quantile(&s, 0.05) - 1.2).abs() < 1e-12);
    assert_eq!(quantile(&s, 0.5), 3.0);
    assert!((quantile(&s, 0.95) - 8.8).abs() < 1e-12);
}
