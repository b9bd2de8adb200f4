package io.blkstack.dm.snapshot;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioSet;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.DataBuffers;
import io.blkstack.block.Submit;
import io.blkstack.block.TestKernel;
import io.blkstack.dm.MappedDevice;
import io.blkstack.dm.StatusForm;
import io.blkstack.dm.Table;
import io.blkstack.dm.TableException;
import io.blkstack.kernel.Completion;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Policies;
import io.blkstack.kernel.TaskKind;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The snapshot targets through mapped devices: origin writes keep the snapshot's view, snapshot
 * writes leave the origin, a persistent snapshot survives reopen and a power cut after any write,
 * a full COW device invalidates the snapshot while the origin carries on, and the table round-trips.
 */
class SnapshotTest {

    private static final int ORIGIN_SECTORS = 256;
    private static final int COW_SECTORS = 1024;
    private static final int CHUNK = 8;

    /** One machine: a kernel, the two disks (contents outlive the kernel), mapped devices, client I/O. */
    private static final class Machine implements AutoCloseable {
        final TestKernel tk;
        final SnapshotDisk.Power power = new SnapshotDisk.Power();
        final Map<String, BlockDevice> devices = new HashMap<>();
        final DataBuffers buffers;
        final BioSet client;
        final List<MappedDevice> mapped = new ArrayList<>();

        Machine(String name, byte[] originData, byte[] cowData) {
            tk = new TestKernel(name, 32L << 20, Policies.defaults(), Faults.NONE);
            devices.put("origin", new SnapshotDisk(tk.kernel, "origin", originData, power));
            devices.put("cow", new SnapshotDisk(tk.kernel, "cow", cowData, power));
            buffers = new DataBuffers(tk.kernel);
            client = new BioSet(tk.kernel, "client", 4, 4, null, false);
        }

        MappedDevice map(String name, String table) throws TableException {
            MappedDevice md = new MappedDevice(tk.kernel, name, Table.parse(tk.kernel, name, table, devices::get));
            devices.put(name, md);
            mapped.add(md);
            return md;
        }

        /** {@code o} = snapshot-origin, {@code s} = snapshot with the given mode and chunk. */
        MappedDevice[] originAndSnapshot(String mode, int chunk) throws TableException {
            MappedDevice o = map("o", "0 " + ORIGIN_SECTORS + " snapshot-origin origin\n");
            MappedDevice s = map("s", "0 " + ORIGIN_SECTORS + " snapshot origin cow " + mode + " " + chunk + "\n");
            return new MappedDevice[] {o, s};
        }

        SnapshotDisk disk(String name) {
            return (SnapshotDisk) devices.get(name);
        }

        BioStatus write(BlockDevice dev, long sector, byte[] data, Random layout) {
            Bio bio = buffers.bio(client, dev, BioOp.WRITE, sector, data.length, layout);
            bio.copyFrom(data, 0);
            BioStatus status = Submit.submitAndWaitStatus(bio);
            bio.put();
            return status;
        }

        BioStatus read(BlockDevice dev, long sector, byte[] into, Random layout) {
            Bio bio = buffers.bio(client, dev, BioOp.READ, sector, into.length, layout);
            byte[] junk = new byte[into.length];
            Arrays.fill(junk, (byte) 0x5a);
            bio.copyFrom(junk, 0);
            BioStatus status = Submit.submitAndWaitStatus(bio);
            System.arraycopy(DataBuffers.contents(bio), 0, into, 0, into.length);
            bio.put();
            return status;
        }

        byte[] readAll(BlockDevice dev) {
            byte[] out = new byte[ORIGIN_SECTORS * Bio.SECTOR_SIZE];
            assertEquals(BioStatus.OK, read(dev, 0, out, null), "read of " + dev.name());
            return out;
        }

        /** Closes the mapped devices (newest first), then the kernel, which checks every page came back. */
        @Override
        public void close() {
            for (int i = mapped.size() - 1; i >= 0; i--) {
                mapped.get(i).close();
            }
            buffers.close();
            tk.close();
        }
    }

    private static byte[] randomBytes(Random r, int n) {
        byte[] b = new byte[n];
        r.nextBytes(b);
        return b;
    }

    /** Random writes of 1..24 sectors at random places through {@code dev}, mirrored into {@code model}. */
    private static void randomWrites(Machine m, BlockDevice dev, byte[] model, Random r, int count) {
        for (int i = 0; i < count; i++) {
            int sectors = 1 + r.nextInt(24);
            int sector = r.nextInt(ORIGIN_SECTORS - sectors + 1);
            byte[] data = randomBytes(r, sectors * Bio.SECTOR_SIZE);
            assertEquals(BioStatus.OK, m.write(dev, sector, data, r), "write " + sector + "+" + sectors);
            System.arraycopy(data, 0, model, sector * Bio.SECTOR_SIZE, data.length);
        }
    }

    /** Proves origin writes copy out first: after random origin writes the snapshot still reads the data as of creation. */
    @ParameterizedTest
    @ValueSource(strings = {"P", "N"})
    void originWritesPreserveSnapshotView(String mode) throws Exception {
        Random r = new Random(11);
        byte[] initial = randomBytes(r, ORIGIN_SECTORS * Bio.SECTOR_SIZE);
        try (Machine m = new Machine("snap-origin-" + mode, initial.clone(), new byte[COW_SECTORS * Bio.SECTOR_SIZE])) {
            MappedDevice[] os = m.originAndSnapshot(mode, CHUNK);
            byte[] model = initial.clone();
            randomWrites(m, os[0], model, r, 60);
            assertArrayEquals(initial, m.readAll(os[1]), "snapshot view changed");
            assertArrayEquals(model, m.readAll(os[0]), "origin lost writes");
            assertArrayEquals(model, m.disk("origin").snapshotBytes(), "origin disk");
            SnapshotTarget st = (SnapshotTarget) os[1].table().target(0);
            assertTrue(st.snapshot().exceptionCount() > 0, "no exceptions made");
            String info = os[1].status(StatusForm.INFO).get(0);
            assertTrue(info.matches("0 256 snapshot \\d+/" + COW_SECTORS + " \\d+"), info);
        }
    }

    /** Proves snapshot writes go to the COW device only: the origin stays as it was and the snapshot reads back what was written. */
    @ParameterizedTest
    @ValueSource(strings = {"P", "N"})
    void snapshotWritesLeaveOriginAlone(String mode) throws Exception {
        Random r = new Random(12);
        byte[] initial = randomBytes(r, ORIGIN_SECTORS * Bio.SECTOR_SIZE);
        try (Machine m = new Machine("snap-write-" + mode, initial.clone(), new byte[COW_SECTORS * Bio.SECTOR_SIZE])) {
            MappedDevice[] os = m.originAndSnapshot(mode, 16);
            byte[] snapModel = initial.clone();
            randomWrites(m, os[1], snapModel, r, 40);
            assertArrayEquals(snapModel, m.readAll(os[1]), "snapshot lost writes");
            assertArrayEquals(initial, m.readAll(os[0]), "origin changed through the origin target");
            assertArrayEquals(initial, m.disk("origin").snapshotBytes(), "origin disk changed");
        }
    }

    /** Proves the persistent store is read back: a new kernel over the same disk contents shows the same snapshot view. */
    @Test
    void persistentSnapshotSurvivesReopen() throws Exception {
        Random r = new Random(13);
        byte[] initial = randomBytes(r, ORIGIN_SECTORS * Bio.SECTOR_SIZE);
        byte[] originData = initial.clone();
        byte[] cowData = new byte[COW_SECTORS * Bio.SECTOR_SIZE];
        byte[] model = initial.clone();
        byte[] snapModel = initial.clone();
        int exceptions;
        String info;
        try (Machine m = new Machine("snap-reopen-1", originData, cowData)) {
            MappedDevice[] os = m.originAndSnapshot("P", CHUNK);
            randomWrites(m, os[0], model, r, 30);
            // A snapshot write of a chunk the origin did not touch yet, and one of a copied chunk.
            byte[] w = randomBytes(r, 3 * Bio.SECTOR_SIZE);
            assertEquals(BioStatus.OK, m.write(os[1], 250, w, null));
            System.arraycopy(w, 0, snapModel, 250 * Bio.SECTOR_SIZE, w.length);
            exceptions = ((SnapshotTarget) os[1].table().target(0)).snapshot().exceptionCount();
            info = os[1].status(StatusForm.INFO).get(0);
        }
        try (Machine m = new Machine("snap-reopen-2", originData, cowData)) {
            MappedDevice[] os = m.originAndSnapshot("P", CHUNK);
            SnapshotTarget st = (SnapshotTarget) os[1].table().target(0);
            assertEquals(exceptions, st.snapshot().exceptionCount(), "exceptions read back");
            assertEquals(info, os[1].status(StatusForm.INFO).get(0), "usage read back");
            byte[] got = m.readAll(os[1]);
            for (int c = 0; c < ORIGIN_SECTORS / CHUNK; c++) {
                int from = c * CHUNK * Bio.SECTOR_SIZE;
                int to = from + CHUNK * Bio.SECTOR_SIZE;
                byte[] expect = Arrays.copyOfRange(c == 31 ? snapModel : initial, from, to);
                assertArrayEquals(expect, Arrays.copyOfRange(got, from, to), "chunk " + c + " after reopen");
            }
            assertArrayEquals(model, m.readAll(os[0]), "origin after reopen");
            // It keeps working after reopen: more origin writes, view unchanged.
            randomWrites(m, os[0], model, r, 20);
            byte[] again = m.readAll(os[1]);
            assertArrayEquals(Arrays.copyOfRange(initial, 0, 31 * CHUNK * Bio.SECTOR_SIZE),
                    Arrays.copyOfRange(again, 0, 31 * CHUNK * Bio.SECTOR_SIZE), "view after more writes");
        }
    }

    /** The workload of the crash sweep: origin writes over 12 chunks, some twice, some spanning two chunks. */
    private static void crashWorkload(Machine m, BlockDevice origin, Random r) {
        for (int i = 0; i < 14; i++) {
            int sector = (i * 37) % (ORIGIN_SECTORS - 16);
            int sectors = 1 + (i % 3) * 6;
            m.write(origin, sector, randomBytes(r, sectors * Bio.SECTOR_SIZE), null);
        }
    }

    /**
     * Proves crash consistency at every point: a dry run counts the workload's writes W (COW data,
     * metadata, origin); then for every N in 0..W the power is cut after N writes (later writes are
     * dropped on both disks), a new kernel reopens the persisted contents, and every chunk of the
     * snapshot must read as it was at creation: either no exception (origin not yet overwritten) or
     * a committed one holding the complete old chunk.
     */
    @Test
    void persistentSnapshotIsConsistentAfterPowerCutAtAnyWrite() throws Exception {
        Random seed = new Random(14);
        byte[] initial = randomBytes(seed, ORIGIN_SECTORS * Bio.SECTOR_SIZE);
        byte[] cowGarbage = randomBytes(seed, COW_SECTORS * Bio.SECTOR_SIZE);
        int total;
        try (Machine m = new Machine("snap-crash-dry", initial.clone(), cowGarbage.clone())) {
            MappedDevice[] os = m.originAndSnapshot("P", CHUNK);
            int before = m.power.writesSeen();
            crashWorkload(m, os[0], new Random(15));
            total = m.power.writesSeen() - before;
        }
        assertTrue(total > 30, "workload too small: " + total + " writes");
        for (int n = 0; n <= total; n++) {
            byte[] originData = initial.clone();
            byte[] cowData = cowGarbage.clone();
            try (Machine m = new Machine("snap-crash-" + n, originData, cowData)) {
                MappedDevice[] os = m.originAndSnapshot("P", CHUNK);
                m.power.cutAfter(n);
                crashWorkload(m, os[0], new Random(15));
            }
            try (Machine m = new Machine("snap-crash-reopen-" + n, originData, cowData)) {
                MappedDevice[] os = m.originAndSnapshot("P", CHUNK);
                assertEquals("valid", ((SnapshotTarget) os[1].table().target(0)).snapshot().isValid() ? "valid" : "invalid");
                byte[] got = m.readAll(os[1]);
                for (int c = 0; c < ORIGIN_SECTORS / CHUNK; c++) {
                    int from = c * CHUNK * Bio.SECTOR_SIZE;
                    int to = from + CHUNK * Bio.SECTOR_SIZE;
                    assertArrayEquals(Arrays.copyOfRange(initial, from, to), Arrays.copyOfRange(got, from, to),
                            "chunk " + c + " after a power cut after write " + n + " of " + total);
                }
            }
        }
    }

    /**
     * Proves the persistent store's metadata is checksummed: after six exceptions are committed, a
     * flip of every 64th bit of the header sector, and of the metadata sector holding the slots,
     * makes the reopen fail with a message naming the sector (never a silently empty or wrong
     * exception table); with the bit restored the snapshot opens and reads as at creation.
     */
    @Test
    void flipOfEverySixtyFourthBitOfHeaderOrMetadataSectorIsRefused() throws Exception {
        Random r = new Random(21);
        byte[] initial = randomBytes(r, ORIGIN_SECTORS * Bio.SECTOR_SIZE);
        byte[] origin = initial.clone();
        byte[] cow = new byte[COW_SECTORS * Bio.SECTOR_SIZE];
        try (Machine m = new Machine("snap-crc", origin, cow)) {
            MappedDevice[] os = m.originAndSnapshot("P", CHUNK);
            for (int i = 0; i < 6; i++) {
                assertEquals(BioStatus.OK, m.write(os[0], i * CHUNK, randomBytes(r, CHUNK * Bio.SECTOR_SIZE), null));
            }
        }
        int metadataSector = CHUNK; // chunk 1 is metadata area 0; its first sector holds the slots of chunks 2..
        int flips = 0;
        for (int sector : new int[] {0, metadataSector}) {
            String names = sector == 0 ? "header (sector 0)" : "metadata area 0, sector " + sector;
            for (int bit = 0; bit < Bio.SECTOR_SIZE * 8; bit += 64) {
                int at = sector * Bio.SECTOR_SIZE + bit / 8;
                cow[at] ^= (byte) (1 << (bit & 7));
                try (Machine m = new Machine("snap-crc-flip", origin, cow)) {
                    m.map("o", "0 " + ORIGIN_SECTORS + " snapshot-origin origin\n");
                    TableException e = assertThrows(TableException.class,
                            () -> m.map("s", "0 " + ORIGIN_SECTORS + " snapshot origin cow P " + CHUNK + "\n"),
                            "flip of bit " + bit + " of sector " + sector);
                    assertTrue(e.getMessage().contains(names), "bit " + bit + ": " + e.getMessage());
                }
                cow[at] ^= (byte) (1 << (bit & 7));
                flips++;
            }
        }
        assertEquals(2 * Bio.SECTOR_SIZE * 8 / 64, flips);
        try (Machine m = new Machine("snap-crc-restored", origin, cow)) {
            MappedDevice[] os = m.originAndSnapshot("P", CHUNK);
            assertArrayEquals(initial, m.readAll(os[1]), "the snapshot as at creation");
        }
    }

    /** Proves a store of the format before checksums is refused with a message, not misread or overwritten. */
    @Test
    void formatOneStoreIsRefusedClearly() throws Exception {
        byte[] cow = new byte[COW_SECTORS * Bio.SECTOR_SIZE];
        java.nio.ByteBuffer header = java.nio.ByteBuffer.wrap(cow).order(java.nio.ByteOrder.LITTLE_ENDIAN);
        header.put(0, "BLKSNAP1".getBytes(java.nio.charset.StandardCharsets.US_ASCII));
        header.putInt(8, 1).putInt(12, 1).putInt(16, CHUNK).putInt(20, 0x1234);
        byte[] before = cow.clone();
        try (Machine m = new Machine("snap-format1", new byte[ORIGIN_SECTORS * Bio.SECTOR_SIZE], cow)) {
            m.map("o", "0 " + ORIGIN_SECTORS + " snapshot-origin origin\n");
            TableException e = assertThrows(TableException.class,
                    () -> m.map("s", "0 " + ORIGIN_SECTORS + " snapshot origin cow P " + CHUNK + "\n"));
            assertTrue(e.getMessage().contains("format 1 (no checksums)"), e.getMessage());
        }
        assertArrayEquals(before, cow, "the old store was left as it was");
    }

    /** Proves a full COW device invalidates the snapshot (status Invalid, I/O fails) while origin writes still succeed. */
    @ParameterizedTest
    @ValueSource(strings = {"P", "N"})
    void fullCowInvalidatesSnapshotAndOriginCarriesOn(String mode) throws Exception {
        Random r = new Random(16);
        byte[] initial = randomBytes(r, ORIGIN_SECTORS * Bio.SECTOR_SIZE);
        // P: header, one metadata chunk, 3 data chunks; N: 5 data chunks.
        byte[] cowData = new byte[5 * CHUNK * Bio.SECTOR_SIZE];
        try (Machine m = new Machine("snap-full-" + mode, initial.clone(), cowData)) {
            MappedDevice[] os = m.originAndSnapshot(mode, CHUNK);
            byte[] model = initial.clone();
            for (int c = 0; c < 8; c++) {
                byte[] data = randomBytes(r, CHUNK * Bio.SECTOR_SIZE);
                assertEquals(BioStatus.OK, m.write(os[0], (long) c * CHUNK, data, null), "origin write to chunk " + c);
                System.arraycopy(data, 0, model, c * CHUNK * Bio.SECTOR_SIZE, data.length);
            }
            assertEquals("0 256 snapshot Invalid", os[1].status(StatusForm.INFO).get(0));
            byte[] into = new byte[Bio.SECTOR_SIZE];
            assertEquals(BioStatus.IOERR, m.read(os[1], 0, into, null), "read of an invalid snapshot");
            assertEquals(BioStatus.IOERR, m.write(os[1], 100, into, null), "write of an invalid snapshot");
            assertArrayEquals(model, m.readAll(os[0]), "origin after invalidation");
            randomWrites(m, os[0], model, r, 10);
            assertArrayEquals(model, m.disk("origin").snapshotBytes(), "origin keeps working");
        }
        if (mode.equals("P")) {
            try (Machine m = new Machine("snap-full-reopen", initial.clone(), cowData)) {
                MappedDevice[] os = m.originAndSnapshot(mode, CHUNK);
                assertEquals("0 256 snapshot Invalid", os[1].status(StatusForm.INFO).get(0), "invalid after reopen");
            }
        }
    }

    /**
     * Proves the origin write waits through queues, not by blocking: four tasks write the same
     * chunks of the origin at once while the copy service is throttled; every write completes and
     * the snapshot still reads the creation-time data.
     */
    @Test
    void concurrentOriginWritersShareOnePendingExceptionPerChunk() throws Exception {
        Random r = new Random(17);
        byte[] initial = randomBytes(r, ORIGIN_SECTORS * Bio.SECTOR_SIZE);
        try (Machine m = new Machine("snap-concurrent", initial.clone(), new byte[COW_SECTORS * Bio.SECTOR_SIZE])) {
            MappedDevice[] os = m.originAndSnapshot("P", CHUNK);
            int writers = 4;
            Completion[] done = new Completion[writers];
            AtomicReference<Throwable> failure = new AtomicReference<>();
            for (int w = 0; w < writers; w++) {
                done[w] = new Completion("writer " + w);
                int id = w;
                Completion mine = done[w];
                m.tk.kernel.spawn("writer-" + w, TaskKind.USER, () -> {
                    try (DataBuffers pages = new DataBuffers(m.tk.kernel)) {
                        Random wr = new Random(100 + id);
                        for (int i = 0; i < 40; i++) {
                            int sector = wr.nextInt(ORIGIN_SECTORS - 8);
                            Bio bio = pages.bio(m.client, os[0], BioOp.WRITE, sector, 8 * Bio.SECTOR_SIZE, wr);
                            bio.copyFrom(randomBytes(wr, 8 * Bio.SECTOR_SIZE), 0);
                            BioStatus s = Submit.submitAndWaitStatus(bio);
                            bio.put();
                            if (s != BioStatus.OK) {
                                throw new IllegalStateException("writer " + id + " got " + s);
                            }
                        }
                    } catch (Throwable t) {
                        failure.compareAndSet(null, t);
                    } finally {
                        mine.complete();
                    }
                });
            }
            for (Completion c : done) {
                c.await();
            }
            if (failure.get() != null) {
                throw new AssertionError(failure.get());
            }
            assertArrayEquals(initial, m.readAll(os[1]), "snapshot view after concurrent writers");
            SnapshotTarget st = (SnapshotTarget) os[1].table().target(0);
            assertEquals(ORIGIN_SECTORS / CHUNK, st.snapshot().exceptionCount(), "one exception per chunk, no more");
        }
    }

    /** Proves the table round-trips through status TABLE and bad arguments are named. */
    @Test
    void tableRoundTripAndErrors() throws Exception {
        try (Machine m = new Machine("snap-table", new byte[ORIGIN_SECTORS * Bio.SECTOR_SIZE],
                new byte[COW_SECTORS * Bio.SECTOR_SIZE])) {
            MappedDevice[] os = m.originAndSnapshot("P", 16);
            assertEquals(List.of("0 256 snapshot-origin origin"), os[0].status(StatusForm.TABLE));
            assertEquals(List.of("0 256 snapshot origin cow P 16"), os[1].status(StatusForm.TABLE));
            assertEquals("0 256 snapshot 32/" + COW_SECTORS + " 32", os[1].status(StatusForm.INFO).get(0));
            assertEquals("0 256 snapshot-origin", os[0].status(StatusForm.INFO).get(0).strip());
            m.devices.put("cow2", new SnapshotDisk(m.tk.kernel, "cow2", new byte[COW_SECTORS * Bio.SECTOR_SIZE], m.power));
            String[][] bad = {
                {"0 256 snapshot origin cow2 X 16", "argument 3"},
                {"0 256 snapshot origin cow2 P 12", "power of two"},
                {"0 256 snapshot origin cow2 P 4", "argument 4"},
                {"0 256 snapshot origin cow2 P", "expected 4"},
                {"0 256 snapshot origin nosuch P 16", "argument 2"},
                {"0 256 snapshot origin origin P 16", "argument 2"},
                {"0 256 snapshot origin cow P 16", "already in use"},
                {"0 256 snapshot-origin", "expected 1"},
            };
            for (String[] b : bad) {
                TableException e = assertThrows(TableException.class,
                        () -> Table.parse(m.tk.kernel, "x", b[0], m.devices::get), b[0]);
                assertTrue(e.getMessage().contains(b[1]), b[0] + ": " + e.getMessage());
            }
            // A persistent store of another chunk size is refused on reopen.
            m.mapped.get(1).close();
            m.mapped.remove(1);
            TableException e = assertThrows(TableException.class,
                    () -> Table.parse(m.tk.kernel, "y", "0 256 snapshot origin cow P 8", m.devices::get));
            assertTrue(e.getMessage().contains("chunk size 16"), e.getMessage());
            assertNotEquals(0, m.disk("cow").data()[0]);
        }
    }
}
