use super::*;
use openraft::{CommittedLeaderId, EntryPayload};
use tempfile::TempDir;

/// Small segments, so that a few entries fill several.
const SEG: u64 = 4096;

fn id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn entry(term: u64, index: u64) -> (LogId, Vec<u8>) {
    let e = Entry { log_id: id(term, index), payload: EntryPayload::Blank };
    (e.log_id, store::encode(&e).expect("encode"))
}

fn ids(log: &SegmentLog, start: u64, end: u64) -> Vec<LogId> {
    log.read(start, end).expect("read").into_iter().map(|e| e.log_id).collect()
}

fn segments(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".log"))
        .collect();
    names.sort();
    names
}

#[test]
fn entries_survive_reopen_across_segments() {
    let dir = TempDir::new().expect("tmp");
    {
        let log = SegmentLog::open(dir.path(), SEG, None).expect("open");
        for i in 1..=200 {
            log.append(&[entry(1, i)]).expect("append");
        }
        assert_eq!(log.last(), Some(id(1, 200)));
    }
    assert!(segments(dir.path()).len() > 3, "{:?}", segments(dir.path()));
    let log = SegmentLog::open(dir.path(), SEG, None).expect("reopen");
    assert_eq!(log.last(), Some(id(1, 200)));
    let want: Vec<LogId> = (1..=200).map(|i| id(1, i)).collect();
    assert_eq!(ids(&log, 0, u64::MAX), want);
    assert_eq!(ids(&log, 50, 53), vec![id(1, 50), id(1, 51), id(1, 52)]);
    assert!(ids(&log, 201, 300).is_empty());
}

#[test]
fn a_batch_longer_than_a_segment_gets_its_own() {
    let dir = TempDir::new().expect("tmp");
    let batch: Vec<_> = (1..=300).map(|i| entry(1, i)).collect();
    {
        let log = SegmentLog::open(dir.path(), SEG, None).expect("open");
        log.append(&batch).expect("append");
        log.append(&[entry(1, 301)]).expect("append");
    }
    let big = segments(dir.path())
        .iter()
        .filter(|n| std::fs::metadata(dir.path().join(n)).expect("stat").len() > SEG)
        .count();
    assert_eq!(big, 1, "the batch did not get a longer segment");
    let log = SegmentLog::open(dir.path(), SEG, None).expect("reopen");
    assert_eq!(ids(&log, 0, u64::MAX).len(), 301);
}

#[test]
fn truncation_is_durable_and_new_entries_replace_old() {
    let dir = TempDir::new().expect("tmp");
    {
        let log = SegmentLog::open(dir.path(), SEG, None).expect("open");
        log.append(&(1..=10).map(|i| entry(1, i)).collect::<Vec<_>>()).expect("append");
        log.truncate(6).expect("truncate");
        assert_eq!(log.last(), Some(id(1, 5)));
    }
    {
        let log = SegmentLog::open(dir.path(), SEG, None).expect("reopen");
        assert_eq!(log.last(), Some(id(1, 5)));
        log.append(&[entry(2, 6), entry(2, 7)]).expect("append");
    }
    let log = SegmentLog::open(dir.path(), SEG, None).expect("reopen");
    assert_eq!(ids(&log, 4, 100), vec![id(1, 4), id(1, 5), id(2, 6), id(2, 7)]);
}

#[test]
fn purge_deletes_old_segments_and_reopen_skips_purged_entries() {
    let dir = TempDir::new().expect("tmp");
    let log = SegmentLog::open(dir.path(), SEG, None).expect("open");
    for i in 1..=200 {
        log.append(&[entry(1, i)]).expect("append");
    }
    let before = segments(dir.path()).len();
    log.purge(150).expect("purge");
    let after = segments(dir.path()).len();
    assert!(after < before && after >= 1, "{before} -> {after}");
    assert_eq!(ids(&log, 0, 153), vec![id(1, 151), id(1, 152)]);
    drop(log);
    let log = SegmentLog::open(dir.path(), SEG, Some(id(1, 150))).expect("reopen");
    assert_eq!(ids(&log, 0, u64::MAX).first(), Some(&id(1, 151)));
    assert_eq!(log.last(), Some(id(1, 200)));
    // Everything purged: the log is empty and goes on from there.
    log.purge(200).expect("purge all");
    assert_eq!(log.last(), None);
    log.append(&[entry(1, 201)]).expect("append");
    drop(log);
    let log = SegmentLog::open(dir.path(), SEG, Some(id(1, 200))).expect("reopen");
    assert_eq!(ids(&log, 0, u64::MAX), vec![id(1, 201)]);
}

#[test]
fn a_torn_write_ends_the_log_and_cannot_come_back() {
    let dir = TempDir::new().expect("tmp");
    let (path, second) = {
        let log = SegmentLog::open(dir.path(), 1 << 20, None).expect("open");
        log.append(&[entry(1, 1)]).expect("append");
        let second = log.writer().as_ref().expect("writer").offset;
        log.append(&[entry(1, 2)]).expect("append");
        log.append(&[entry(1, 3)]).expect("append");
        (dir.path().join(&segments(dir.path())[0]), second)
    };
    // Entry 2 torn (one payload byte wrong), entry 3 whole behind it.
    let file = open_rw(&path).expect("open segment");
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, second + HEADER as u64).expect("read");
    file.write_all_at(&[byte[0] ^ 0xff], second + HEADER as u64).expect("write");
    {
        let log = SegmentLog::open(dir.path(), 1 << 20, None).expect("reopen");
        assert_eq!(log.last(), Some(id(1, 1)));
        // A new entry 2 of the same length lands where the torn one was.
        log.append(&[entry(2, 2)]).expect("append");
    }
    let log = SegmentLog::open(dir.path(), 1 << 20, None).expect("reopen");
    assert_eq!(ids(&log, 0, u64::MAX), vec![id(1, 1), id(2, 2)]);
}

#[test]
fn a_bad_record_in_a_sealed_segment_is_refused() {
    let dir = TempDir::new().expect("tmp");
    {
        let log = SegmentLog::open(dir.path(), SEG, None).expect("open");
        for i in 1..=100 {
            log.append(&[entry(1, i)]).expect("append");
        }
    }
    let first = dir.path().join(&segments(dir.path())[0]);
    let file = open_rw(&first).expect("open segment");
    file.write_all_at(&[0xff], HEADER as u64 + 1).expect("write");
    assert!(SegmentLog::open(dir.path(), SEG, None).is_err());
}

#[test]
fn appends_overwrite_a_zeroed_file() {
    let dir = TempDir::new().expect("tmp");
    let log = SegmentLog::open(dir.path(), SEG, None).expect("open");
    log.append(&[entry(1, 1)]).expect("append");
    let name = &segments(dir.path())[0];
    // The segment is as long as it was made, and written, not a hole:
    // appends never grow the file or fill its holes.
    let meta = std::fs::metadata(dir.path().join(name)).expect("stat");
    assert_eq!(meta.len(), SEG);
    assert!(std::os::unix::fs::MetadataExt::blocks(&meta) * 512 >= SEG);
    assert!(log.append(&[entry(1, 3)]).is_err(), "a hole was accepted");
}
