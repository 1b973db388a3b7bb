use super::*;

const SEG: u64 = 1 << 20;

/// A volume of `size` bytes in 1 MiB segments under `dir`.
fn make(dir: &Path, size: u64) -> VolumeFile {
    let path = dir.join("vol-1.img");
    VolumeFile::create_later_segments_of(&path, size, SEG).expect("later segments");
    let first = File::create_new(&path).expect("first");
    first.set_len(size.min(SEG)).expect("first len");
    VolumeFile::open_with(&path, SEG, false).expect("open")
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

#[test]
fn reads_and_writes_cross_segment_boundaries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let size = 3 * SEG + 4096;
    let v = make(dir.path(), size);
    assert_eq!(v.size().expect("len"), size);
    let names: Vec<_> =
        (0..4).map(|n| segment_path(&dir.path().join("vol-1.img"), n).exists()).collect();
    assert_eq!(names, vec![true; 4]);
    assert!(!segment_path(&dir.path().join("vol-1.img"), 4).exists());

    let data = pattern((SEG + 8192) as usize, 3);
    let at = SEG - 4096; // from the end of segment 0, over all of 1, into 2
    v.write_all_at(&data, at).expect("write");
    let mut back = vec![0u8; data.len()];
    v.read_exact_at(&mut back, at).expect("read");
    assert_eq!(back, data);
    let mut zeroed = vec![0u8; data.len()];
    v.read_data_at(&mut zeroed, at).expect("read data");
    assert_eq!(zeroed, data);
    // Segment 1 holds bytes [4096, 4096 + SEG) of the write, at its offset 0.
    let mut raw = vec![0u8; 4096];
    File::open(segment_path(&dir.path().join("vol-1.img"), 1))
        .expect("segment 1")
        .read_exact_at(&mut raw, 0)
        .expect("raw");
    assert_eq!(raw, data[4096..8192]);

    let mut past = vec![0u8; 8192];
    assert!(v.read_exact_at(&mut past, size - 4096).is_err(), "reads stop at the end");
}

#[test]
fn extents_are_in_volume_offsets_and_stop_where_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let size = 4 * SEG;
    let v = make(dir.path(), size);
    let marks = [4096, SEG + 8192, 3 * SEG + 4096];
    for (i, m) in marks.iter().enumerate() {
        v.write_all_at(&[i as u8 + 1; 4096], *m).expect("write");
    }
    let all = v.data_extents_in(0, size).expect("extents");
    assert_eq!(all.len(), 3, "{all:?}");
    for (e, m) in all.iter().zip(marks) {
        assert!(e.0 <= m && m + 4096 <= e.1, "{e:?} covers {m}");
    }
    let (first, known) = v.data_extents_upto(0, size, 1).expect("first");
    assert_eq!(first, all[..1]);
    assert!(known >= first[0].1 && known <= marks[1], "known {known}");
    let (tail, known) = v.data_extents_upto(2 * SEG, size, usize::MAX).expect("tail");
    assert_eq!((tail, known), (all[2..].to_vec(), size));

    v.punch_hole(SEG - 4096, SEG + 16384).expect("punch across");
    assert_eq!(v.data_extents_in(0, size).expect("after punch"), vec![all[0], all[2]]);
    let mut back = [9u8; 4096];
    v.read_exact_at(&mut back, SEG + 8192).expect("read punched");
    assert_eq!(back, [0u8; 4096]);
    v.write_zeroes(3 * SEG, 8192).expect("zeroes");
    v.read_exact_at(&mut back, 3 * SEG + 4096).expect("read zeroed");
    assert_eq!(back, [0u8; 4096]);
}

#[test]
fn growing_adds_segments_and_reopen_reads_the_size_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("vol-1.img");
    let v = make(dir.path(), SEG / 2);
    v.write_all_at(&[7u8; 4096], 0).expect("write");
    v.set_len(2 * SEG + 12288).expect("grow");
    assert_eq!(v.size().expect("len"), 2 * SEG + 12288);
    v.write_all_at(&[8u8; 4096], 2 * SEG + 8192).expect("write in the new segment");
    v.sync_all().expect("sync");
    drop(v);

    let v = VolumeFile::open_with(&path, SEG, false).expect("reopen");
    assert_eq!(v.size().expect("len"), 2 * SEG + 12288);
    let mut b = [0u8; 4096];
    v.read_exact_at(&mut b, 0).expect("read");
    assert_eq!(b, [7u8; 4096]);
    v.read_exact_at(&mut b, 2 * SEG + 8192).expect("read");
    assert_eq!(b, [8u8; 4096]);
    v.read_exact_at(&mut b, SEG + 4096).expect("read grown space");
    assert_eq!(b, [0u8; 4096]);
    v.set_len(SEG).expect("a smaller size changes nothing");
    assert_eq!(v.size().expect("len"), 2 * SEG + 12288);
}

#[test]
fn a_crashed_create_leaves_emptied_segments_and_orphans_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("vol-1.img");
    // A create cut short: later segments, no first file; stale bytes in one.
    VolumeFile::create_later_segments_of(&path, 3 * SEG, SEG).expect("later");
    std::fs::write(segment_path(&path, 2), vec![5u8; SEG as usize]).expect("stale");
    assert!(is_orphan_segment(&segment_path(&path, 1)));
    assert!(!is_orphan_segment(&path));
    assert_eq!(segment_owner("vol-1.img.12"), Some("vol-1.img"));
    assert_eq!(segment_owner("vol-1.img"), None);
    assert_eq!(segment_owner("vol-1.state"), None);
    assert_eq!(segment_owner("vol-1.img.x"), None);

    // Created again: the stale segment is emptied.
    let v = make(dir.path(), 3 * SEG);
    assert!(!is_orphan_segment(&segment_path(&path, 1)));
    let mut b = [1u8; 4096];
    v.read_exact_at(&mut b, 2 * SEG).expect("read");
    assert_eq!(b, [0u8; 4096]);
    drop(v);
    VolumeFile::remove(&path).expect("remove");
    assert!((0..3).all(|n| !segment_path(&path, n).exists()));
}

#[test]
fn a_single_file_volume_from_before_segments_stays_one_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("vol-1.img");
    let old = File::create_new(&path).expect("old");
    old.set_len(3 * SEG).expect("len");
    old.write_all_at(&[6u8; 4096], 2 * SEG + 4096).expect("data past a segment");
    drop(old);
    let v = VolumeFile::open_with(&path, SEG, false).expect("open");
    assert_eq!(v.size().expect("size"), 3 * SEG);
    let mut b = [0u8; 4096];
    v.read_exact_at(&mut b, 2 * SEG + 4096).expect("read");
    assert_eq!(b, [6u8; 4096]);
    let extents = v.data_extents_in(0, 3 * SEG).expect("extents");
    assert!(extents.iter().any(|(s, e)| *s <= 2 * SEG + 4096 && 2 * SEG + 8192 <= *e));
    v.set_len(4 * SEG).expect("grow");
    assert!(!segment_path(&path, 1).exists(), "grown in place");
    assert_eq!(std::fs::metadata(&path).expect("meta").len(), 4 * SEG);
}

#[test]
fn gaps_and_short_segments_are_refused_and_stale_ones_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("vol-1.img");
    drop(make(dir.path(), 3 * SEG));
    std::fs::remove_file(segment_path(&path, 1)).expect("lose the middle one");
    std::fs::rename(segment_path(&path, 2), segment_path(&path, 1)).expect("shift");
    File::options()
        .write(true)
        .open(segment_path(&path, 1))
        .and_then(|f| f.set_len(10))
        .expect("cut");
    File::create(segment_path(&path, 2)).and_then(|f| f.set_len(SEG)).expect("after");
    let err = VolumeFile::open_with(&path, SEG, false).err().expect("refused");
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");

    // The same id made again, smaller: segments past its own are removed.
    std::fs::remove_file(&path).expect("first");
    let v = make(dir.path(), SEG + 4096);
    assert!(!segment_path(&path, 2).exists());
    assert_eq!(v.size().expect("size"), SEG + 4096);
}
