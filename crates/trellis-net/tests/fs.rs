//! File I/O as checkpoints (Trio: `test_file_io.py`, `test_path.py` basics).

use std::io::SeekFrom;

use trellis::CancelScope;
use trellis_net::fs;

#[test]
fn files_read_write_seek() {
    trellis::testing::run_test_multi_thread(async {
        let path = std::env::temp_dir().join(format!("trellis-fs-{}", std::process::id()));
        fs::write(&path, b"hello world").await.unwrap();
        assert_eq!(fs::read(&path).await.unwrap(), b"hello world");
        let mut f = fs::File::open(&path).await.unwrap();
        let mut buf = [0u8; 5];
        assert_eq!(f.read(&mut buf).await.unwrap(), 5);
        assert_eq!(&buf, b"hello");
        f.seek(SeekFrom::Start(6)).await.unwrap();
        assert_eq!(f.read_to_end().await.unwrap(), b"world");
        let mut f = fs::File::create(&path).await.unwrap();
        f.write_all(b"new").await.unwrap();
        f.sync_all().await.unwrap();
        assert_eq!(fs::read(&path).await.unwrap(), b"new");
        // In a cancelled scope nothing happens: the file stays as it was.
        let scope = CancelScope::new();
        scope.cancel();
        let outcome = scope.run(fs::write(&path, b"lost")).await.unwrap();
        assert!(outcome.is_none());
        assert_eq!(fs::read(&path).await.unwrap(), b"new");
        fs::remove_file(&path).await.unwrap();
        assert!(fs::read(&path).await.is_err());
    });
}
