// Package wal is Keel's durable write path: the Store interface that the
// engine, sessions and retain write through, and its local implementation,
// Log: a Pebble store, the key and record schema kept in it, and the group
// commit that makes every acknowledgement mean "on disk".
//
// This comment is the spec of the format and of the commit rules; the code
// files point here. The contract every Store keeps (what Done(nil)
// promises, Done order, what a read may see, what follows a failure) is
// the doc of Store (store.go).
//
// # Files
//
//	store.go    Store, Reader, Snapshot, Commit: the contract
//	log.go      Options, Txn (Set, Delete, DeleteRange)
//	open.go     Open, Close, Err, the format version check
//	datadir.go  the data directory checks and lock (ErrNotDataDir, ErrLocked)
//	manifest.go the MANIFEST check before Pebble opens
//	commit.go   Submit and the committer; Stats
//	syncfs.go   the filesystem wrapper that counts and times WAL syncs
//	read.go     Get, Scan, Snapshot
//	keys.go     the key schema below
//	records.go, codec.go  the records below: types, Append*, Decode*, PeekEntry
//
// # Keys
//
// Part of the on-disk format (keys.go): changing any byte needs a new
// FormatVersion.
//
//	0x00 "format"                                  -> uint32 BE format version
//	'm' msgID(8, BE)                               -> Message (shared body)
//	'r' topic                                      -> Message (retained)
//	's' len(client)(2, BE) client 'M'              -> Session
//	's' len(client)(2, BE) client 'S' filter       -> Subscription
//	's' len(client)(2, BE) client 'Q' seq(8, BE)   -> Entry
//	's' len(client)(2, BE) client 'I' packetID(2, BE) -> empty (inbound QoS 2 id received)
//	'd' len(scope)(2, BE) scope msgID              -> expiry (8, BE, Unix ms) (format 2)
//
// The kind bytes after the client id are KindSession ('M'),
// KindSubscription ('S'), KindQueue ('Q') and KindInbound ('I'). Client
// identifiers are MQTT strings (at most 65,535 bytes), so their length fits
// two bytes, and the length prefix keeps one client's keys from
// interleaving with another's whose id it prefixes.
//
// Ranges: a session's whole state is SessionPrefix(client) (erased with one
// Txn.DeleteRange); its queue is QueuePrefix(client), ordered by seq; every
// session is AllSessionsPrefix(); shared bodies are MessagePrefix(); the
// retained set is RetainPrefix(); the dedup window's records (the message
// ids a publisher's scope routed, sessions/dedup) are DedupPrefix(),
// outside any session so that they outlive a clean start. PrefixEnd gives a prefix's exclusive
// upper bound. ParseSessionKeyBytes, ParseQueueSeq and ParseMessageKey take
// keys apart again (for replay). Only sessions (and sessions/dedup) and retain build keys
// (DESIGN.md); the engine does not.
//
// # Records
//
// Every value starts with a record version byte, 1 for every record this
// version writes; a decoder refuses any other. uvarint and varint are
// encoding/binary's; str and bytes are a uvarint length and that many bytes.
// Flag bits not listed must be zero. Decoders copy everything they return
// and return an error wrapping ErrCorruptRecord, never panic, on bad input.
//
// Message (AppendMessage; also the "msg" inside Entry and Session, without
// its version byte):
//
//	+------+-------+-----+-----------+--------------+-----------+
//	| 0x01 | flags | qos | [pformat] | expireAt     | topic     |
//	| 1 B  | 1 B   | 1 B | 1 B       | varint (ms)  | str       |
//	+------+-------+-----+-----------+--------------+-----------+
//	| [contentType str | responseTopic str | correlation bytes  |
//	|  | uvarint n | n × (key str, value str)]                  |
//	+------------------------------------------------------------+
//	| payload bytes (raw, or an S2 block if flags&0x04)         |
//	+------------------------------------------------------------+
//
//	flags: 0x01 retain
//	       0x02 has payload format indicator: the [pformat] byte is present
//	       0x04 payload is S2-compressed (klauspost/compress/s2 block format)
//	       0x08 has properties: the bracketed property fields are present
//	       0x10 has correlation data (distinguishes empty from absent);
//	            requires 0x08
//
// A payload of at least the compression threshold (Log.CompressThreshold:
// default 1024 bytes, negative disables) is stored compressed only when the
// S2 block is shorter than the payload; otherwise it stays raw. An S2 block
// claiming more than 256 MiB (MQTT's limit) is corrupt.
//
// Entry (AppendEntry):
//
//	+------+-------+-------+-----+----------+-----------------------+---------+-------+
//	| 0x01 | flags | state | qos | packetID | n, n × subID          | shared  | [msg] |
//	| 1 B  | 1 B   | 1 B   | 1 B | uvarint  | uvarint, uvarint each | uvarint |       |
//	+------+-------+-------+-----+----------+-----------------------+---------+-------+
//
//	flags: 0x01 retain   0x02 inline message present ([msg] follows)
//	state: 0 queued, 1 sent, 2 released
//	shared: MessageKey id of the shared body; 0 = none
//
// Session (AppendSession):
//
//	+------+-------+----------+---------------+----------------+-------------------------+---------+
//	| 0x01 | flags | protocol | expirySeconds | disconnectedAt | [willDelay uvarint, msg] | [owner] |
//	| 1 B  | 1 B   | 1 B      | uvarint       | varint (ms)    |                         | string  |
//	+------+-------+----------+---------------+----------------+-------------------------+---------+
//
//	flags: 0x01 will present   0x02 owner present (format 2)
//	       0x04 the owner is anonymous (with 0x02; its string is empty)
//
// The owner is the username of the client that created the session
// (format 2); a record without one (format 1) belongs to whoever connects
// first.
//
// Subscription (AppendSubscription):
//
//	+------+-------+-----+----------------+---------+
//	| 0x01 | flags | qos | retainHandling | subID   |
//	| 1 B  | 1 B   | 1 B | 1 B            | uvarint |
//	+------+-------+-----+----------------+---------+
//
//	flags: 0x01 no local   0x02 retain as published
//
// # Commit pipeline
//
// Log implements Store's contract as follows (commit.go). Submit applies a
// Txn to Pebble at once, in the submitting goroutine, as one Pebble batch,
// and queues it for the one committer goroutine (Log.run), which waits for
// the syncs and calls the Dones. The queue holds at most 4096 Txns: a full
// queue blocks Submit, which is the broker's back-pressure. Applying in the
// submitter keeps a goroutine wakeup off the path from a PUBLISH to its WAL
// write: on this project's 2-vCPU machine each wakeup is 5-10 us
// (bench/ANALYSIS.md), next to a 200 us fsync. The rules:
//
//  1. Submit holds the queue's mutex while it applies, so Txns reach
//     Pebble's WAL in Submit order, each all or nothing: a crash keeps a
//     prefix of the log. A Txn's Set, Delete and DeleteRange ops are
//     applied in the order they were added (a DeleteRange removes keys Set
//     before it in the same Txn, not those after it) and cost one record
//     each, whatever a range holds.
//  2. A Txn without NoSync is applied with pebble.Sync
//     (DB.ApplyNoSyncWait), and the committer waits for that sync
//     (Batch.SyncWait) before it calls the Txn's Done: Done(nil) never
//     precedes the fsync of the WAL record that holds the Txn, so no ack
//     leaves before its state is on disk.
//  3. Done runs on the committer, in Submit order. Done must therefore be
//     quick and must not call Submit, Commit or Close.
//  4. Group commit is Pebble's own: its WAL writer syncs everything written
//     since its last fdatasync with the next one, so Txns submitted while a
//     sync is in progress share one. An empty Txn touches nothing and is
//     acknowledged in order. A NoSync Txn is written to the WAL without a
//     sync of its own (its Done means "ordered", not "durable"); the next
//     synced Txn makes it durable.
//  5. Pebble applies a batch to its memtable before the sync completes, so
//     Get, Scan and a new Snapshot observe a Txn whose Done has not run yet
//     (or that then fails). State that must be durable is read only after
//     Done.
//  6. After Close has begun, Submit waits for the committer to finish and
//     then calls Done(ErrClosed); Close first completes everything
//     submitted before it.
//
// Stats.Syncs and Stats.SyncLatency count and time the WAL's fdatasyncs as
// the filesystem sees them: Open wraps the FS it gives Pebble (syncfs.go)
// so that every Sync, SyncData and SyncTo of a *.log file is counted into
// plain counters over SyncBuckets. Nothing in wal depends on Prometheus;
// cmd exports the counters.
//
// # Failures
//
// Pebble cannot go on after a failed WAL write or sync: its WAL writer keeps
// the error, hands it to every later sync waiter, and eventually panics
// inside its commit pipeline; DB.Apply reports a commit error by calling
// Logger.Fatalf, whose default calls os.Exit. Keel installs its own Pebble
// Logger: Fatalf logs, records a sticky error, and returns. Keel commits
// with DB.ApplyNoSyncWait and Batch.SyncWait, which return the sync error
// instead of routing it through Fatalf.
//
// When an apply or a sync fails, that Txn gets Done(err), the failure is
// counted (Stats.Failures) and logged, and the error becomes sticky: Err()
// returns it from then on, nothing more is written to Pebble, and every
// later Txn gets Done(Err()) promptly, in order. A failed Txn was not
// acknowledged, but its outcome is unknown (the bytes may have reached the
// disk before the failing fsync returned): after a restart it is either
// wholly present or wholly absent. Close still completes: it fails what is
// queued, stops the committer and closes Pebble (if Pebble panicked in its
// commit pipeline, the DB is left for process exit, since its commit mutex
// may be held). The broker should treat a non-nil Err() as fatal and
// restart; Pebble replays its WAL on Open.
//
// One path is beyond Keel's reach: if the first sign of a WAL error comes
// while Pebble rotates its WAL (a memtable switch inside a commit), Pebble
// panics in DB.rotateWAL with its DB mutex released, and the deferred unlock
// turns that into an unrecoverable Go runtime fatal error: the process
// exits, as Pebble's default Fatalf would. That is still safe: nothing
// unsynced was acknowledged, and the restart replays the WAL.
//
// # Opening
//
// Before Pebble opens a directory, Open checks what it is (datadir.go):
//
//   - missing: it is created;
//   - empty, or holding only what an interrupted first start leaves (LOCK,
//     marker.*, a WAL *.log, *.dbtmp): it becomes a new store;
//   - holding a Pebble store (a MANIFEST-*, CURRENT or OPTIONS-* file):
//     it is opened, and the checks below apply;
//   - anything else: refused with an error wrapping ErrNotDataDir, naming
//     the directory and the files that do not belong, so that a wrong
//     --data never scatters Pebble's files among someone else's.
//
// lost+found (the root of a fresh filesystem) is ignored.
//
// Then Open takes Pebble's directory lock (the LOCK file, an fcntl lock on
// Unix) itself and hands it to Pebble, so that a directory in use fails with
// an error wrapping ErrLocked that names the holder's PID where the system
// can tell it (lockholder_unix.go: F_GETLK; elsewhere, and on a non-OS
// filesystem, no PID), or this process when another Open in it holds the
// directory. Close releases the lock after Pebble has closed.
//
// Before Pebble reads its MANIFEST, Open checks that a damaged record is
// only ever a torn tail (manifest.go): Pebble would otherwise open an older
// version of the store and delete newer tables as obsolete.
//
// Open opens Pebble with format major version pebble.FormatValueSeparation,
// pinned (not FormatNewest) so that a Pebble upgrade never silently
// rewrites the directory, and loads every sstable's properties so that a
// truncated or garbled table fails Open rather than a later read. An empty
// store gets the format key (synced). A store of format 1 is upgraded to
// 2 by rewriting that key (synced): format 2 only adds the session owner,
// which format 1's records lack and read as none, and the dedup records,
// which format 1 has none of, so no record is rewritten; from then on a format-1 keel refuses the directory with
// "upgrade keel" instead of failing on an owner it cannot read. A format version above FormatVersion fails with an
// error wrapping ErrNewerFormat; a store with data but no format key, and a
// store Pebble finds corrupt (a damaged MANIFEST or sstable), fail with an
// error naming the directory and what to do. A torn tail of the newest WAL
// file (a write cut short by a crash, never synced, never acknowledged) is
// not corruption: Pebble's WAL recovery stops at it and Open succeeds.
package wal
