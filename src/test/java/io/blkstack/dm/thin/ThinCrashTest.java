package io.blkstack.dm.thin;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.bio.BioFlags;
import io.blkstack.bio.BioSet;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.TestKernel;
import io.blkstack.dm.MappedDevice;
import io.blkstack.dm.Table;
import io.blkstack.dm.thin.ThinPoolTarget;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Policies;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Crash consistency of a thin pool. Proves: after a power cut at any flush boundary of the write
 * sequence (every prefix of the journal of both disks that ends at a flush), the pool reopens,
 * {@code thin check} finds nothing wrong, and every write acknowledged by a client flush is
 * present. How: the metadata and data disks record one shared journal; a random workload of
 * partial-block writes, FUA writes, discards and flushes runs on a thin device; then each prefix
 * is replayed onto fresh disks and a new pool over them is checked. A 4 KiB page may hold the value
 * it had at the last completed client flush or any value written after it, nothing else.
 */
class ThinCrashTest {

    static final int META_BYTES = 512 * 1024;
    static final int DATA_BYTES = 512 * 1024; // 64 blocks of 8 KiB
    static final int THIN_SECTORS = 512; // 64 pages
    static final int PAGES = THIN_SECTORS / 8;

    @ParameterizedTest
    @ValueSource(longs = {1, 2, 3})
    void everyFlushBoundaryReopensCleanWithEveryFlushedWrite(long seed) throws Exception {
        try (TestKernel tk = new TestKernel("thin-crash-" + seed, 32L << 20, Policies.defaults(), Faults.NONE)) {
            BioSet client = new BioSet(tk.kernel, "client", 4, 4, null, false);
            ThinIo io = new ThinIo(tk.kernel, client);
            JournalDisk.Journal journal = new JournalDisk.Journal();
            Map<String, BlockDevice> devices = new HashMap<>();
            JournalDisk meta = new JournalDisk(tk.kernel, "meta", new byte[META_BYTES], 0, journal);
            JournalDisk data = new JournalDisk(tk.kernel, "data", new byte[DATA_BYTES], 1, journal);
            devices.put("meta", meta);
            devices.put("data", data);
            MappedDevice pool = new MappedDevice(tk.kernel, "pool",
                    Table.parse(tk.kernel, "pool", "0 1024 thin-pool meta data 16 0", devices::get));
            devices.put("pool", pool);
            MappedDevice thin = new MappedDevice(tk.kernel, "thin",
                    Table.parse(tk.kernel, "thin", "0 " + THIN_SECTORS + " thin pool 1", devices::get));

            // history.get(page): values in write order, each with the write's sequence number.
            List<List<long[]>> seqs = new ArrayList<>();
            List<List<byte[]>> values = new ArrayList<>();
            for (int p = 0; p < PAGES; p++) {
                seqs.add(new ArrayList<>());
                values.add(new ArrayList<>());
            }
            List<int[]> flushes = new ArrayList<>(); // {journal length at completion, write seq at flush}
            Random r = new Random(seed);
            int seq = 0;
            for (int op = 0; op < 60; op++) {
                int kind = r.nextInt(10);
                int page = r.nextInt(PAGES);
                if (kind < 7) {
                    byte[] bytes = ThinTargetTest.pattern(seed * 1000 + op, 4096);
                    boolean fua = kind == 0;
                    assertEquals(BioStatus.OK, io.write(thin, page * 8L, bytes, fua ? BioFlags.FUA : 0));
                    seq++;
                    seqs.get(page).add(new long[] {seq});
                    values.get(page).add(bytes);
                    if (fua) {
                        flushes.add(new int[] {journal.size(), seq});
                    }
                } else if (kind < 8) {
                    int blockPage = page & ~1;
                    assertEquals(BioStatus.OK, io.discard(thin, blockPage * 8L, 16));
                    seq++;
                    for (int p : new int[] {blockPage, blockPage + 1}) {
                        seqs.get(p).add(new long[] {seq});
                        values.get(p).add(new byte[4096]);
                    }
                } else {
                    assertEquals(BioStatus.OK, io.flush(thin));
                    flushes.add(new int[] {journal.size(), seq});
                }
            }
            thin.close();
            pool.close();

            List<JournalDisk.Entry> entries = journal.entries();
            int checked = 0;
            for (int i = 0; i < entries.size(); i++) {
                if (!entries.get(i).isFlush()) {
                    continue;
                }
                int length = i + 1;
                int flushedSeq = 0;
                for (int[] f : flushes) {
                    if (f[0] <= length) {
                        flushedSeq = Math.max(flushedSeq, f[1]);
                    }
                }
                verifyReplay(tk, journal, length, flushedSeq, seqs, values, "seed " + seed + " prefix " + length);
                checked++;
            }
            assertTrue(checked > 10, "flush boundaries checked: " + checked);
            meta.close();
            data.close();
            client.close();
        }
    }

    /** Replays a prefix onto fresh disks, reopens the pool, checks it and every page of the thin device. */
    private static void verifyReplay(TestKernel tk, JournalDisk.Journal journal, int length, int flushedSeq,
            List<List<long[]>> seqs, List<List<byte[]>> values, String what) throws Exception {
        byte[][] images = journal.replay(length, 2, Math.max(META_BYTES, DATA_BYTES));
        Map<String, BlockDevice> devices = new HashMap<>();
        JournalDisk meta = new JournalDisk(tk.kernel, "m" + length, Arrays.copyOf(images[0], META_BYTES), 0, null);
        JournalDisk data = new JournalDisk(tk.kernel, "d" + length, Arrays.copyOf(images[1], DATA_BYTES), 1, null);
        devices.put("meta", meta);
        devices.put("data", data);
        BioSet client = new BioSet(tk.kernel, "client" + length, 2, 2, null, false);
        ThinIo io = new ThinIo(tk.kernel, client);
        MappedDevice pool = new MappedDevice(tk.kernel, "p" + length,
                Table.parse(tk.kernel, "p" + length, "0 1024 thin-pool meta data 16 0", devices::get));
        devices.put("pool", pool);
        Pool runtime = ((ThinPoolTarget) pool.table().target(0)).pool();
        assertEquals(List.of(), runtime.check(), what + ": thin check");
        MappedDevice thin = new MappedDevice(tk.kernel, "t" + length,
                Table.parse(tk.kernel, "t" + length, "0 " + THIN_SECTORS + " thin pool 1", devices::get));
        try {
            for (int p = 0; p < PAGES; p++) {
                byte[] got = new byte[4096];
                assertEquals(BioStatus.OK, io.read(thin, p * 8L, got));
                List<byte[]> allowed = new ArrayList<>();
                byte[] atFlush = new byte[4096];
                for (int k = 0; k < seqs.get(p).size(); k++) {
                    if (seqs.get(p).get(k)[0] <= flushedSeq) {
                        atFlush = values.get(p).get(k);
                    } else {
                        allowed.add(values.get(p).get(k));
                    }
                }
                allowed.add(atFlush);
                boolean ok = false;
                for (byte[] a : allowed) {
                    ok |= Arrays.equals(a, got);
                }
                if (flushedSeq == 0) {
                    ok |= Arrays.equals(new byte[4096], got);
                }
                assertTrue(ok, what + ": page " + p + " holds a value that was never flushed or written after the last flush "
                        + "(flushed up to write " + flushedSeq + ")");
            }
        } finally {
            thin.close();
            pool.close();
            client.close();
            meta.close();
            data.close();
        }
    }
}
