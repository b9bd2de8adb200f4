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
            this(name, originData, cowData, false);
        }

        /** With {@code originHoles}, the origin disk reports its all-zero sectors as holes. */
        Machine(String name, byte[] originData, byte[] cowData, boolean originHoles) {
            tk = new TestKernel(name, 32L << 20, Policies.defaults(), Faults.NONE);
            devices.put("origin", new SnapshotDisk(tk.kernel, "origin", originData, power, originHoles));
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
            return originAndSnapshot(mode, chunk, ORIGIN_SECTORS);
        }

        MappedDevice[] originAndSnapshot(String mode, int chunk, int sectors) throws TableException {
            MappedDevice o = map("o", "0 " + sectors + " snapshot-origin origin\n");
            MappedDevice s = map("s", "0 " + sectors + " snapshot origin cow " + mode + " " + chunk + "\n");
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
            byte[] out = new byte[Math.toIntExact(dev.capacitySectors() * Bio.SECTOR_SIZE)];
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

    // ---- the copy engine: runs, holes, full-chunk snapshot writes ------------------------------

    private static final int BIG_SECTORS = 2048; // 256 chunks of 8 sectors
    private static final int BIG_COW_SECTORS = 4096;

    /** Reads all of {@code dev} in bios of 256 sectors. */
    private static byte[] readBig(Machine m, BlockDevice dev) {
        int sectors = Math.toIntExact(dev.capacitySectors());
        byte[] out = new byte[sectors * Bio.SECTOR_SIZE];
        byte[] part = new byte[256 * Bio.SECTOR_SIZE];
        for (int at = 0; at < sectors; at += 256) {
            assertEquals(BioStatus.OK, m.read(dev, at, part, null), "read of " + dev.name() + " at " + at);
            System.arraycopy(part, 0, out, at * Bio.SECTOR_SIZE, part.length);
        }
        return out;
    }

    /** An origin whose chunk c holds random data when (c / 5) is even and is a hole (zeros) otherwise. */
    private static byte[] dataAndHoles(Random r) {
        byte[] b = new byte[BIG_SECTORS * Bio.SECTOR_SIZE];
        for (int c = 0; c < BIG_SECTORS / CHUNK; c++) {
            if ((c / 5) % 2 == 0) {
                byte[] chunk = randomBytes(r, CHUNK * Bio.SECTOR_SIZE);
                System.arraycopy(chunk, 0, b, c * CHUNK * Bio.SECTOR_SIZE, chunk.length);
            }
        }
        return b;
    }

    /** Origin first writes of every shape: {sector, sectors}. */
    private static final int[][] FIRST_WRITE_SHAPES = {
        {3, 2},         // part of a data chunk
        {5 * CHUNK + 1, 3}, // part of a hole chunk
        {2 * CHUNK, CHUNK}, // a whole data chunk
        {6 * CHUNK, CHUNK}, // a whole hole chunk
        {12 * CHUNK + 5, 7 * CHUNK}, // a run across chunks, unaligned, over data and holes
        {40 * CHUNK, 512}, // 64 chunks in one write: runs longer than one copy piece
        {13 * CHUNK, 2 * CHUNK}, // chunks that already have exceptions from the run above
        {200 * CHUNK + 4, 30 * CHUNK}, // another run over data and holes
        {BIG_SECTORS - 3, 3}, // the last chunk
    };

    /**
     * Proves the snapshot keeps the origin's data as of creation through origin first writes of
     * every shape (part of a chunk, whole chunks, unaligned runs across chunks, runs longer than a
     * copy piece, over data and over holes), with a COW device full of garbage (so a hole chunk
     * must really be zeroed there, not just left unread), and after a reopen for P.
     */
    @ParameterizedTest
    @ValueSource(strings = {"P", "N"})
    void originFirstWritesOfEveryShapeKeepTheSnapshotView(String mode) throws Exception {
        Random r = new Random(31);
        byte[] initial = dataAndHoles(r);
        byte[] originData = initial.clone();
        byte[] cowData = randomBytes(r, BIG_COW_SECTORS * Bio.SECTOR_SIZE);
        byte[] model = initial.clone();
        try (Machine m = new Machine("snap-shapes-" + mode, originData, cowData, true)) {
            MappedDevice[] os = m.originAndSnapshot(mode, CHUNK, BIG_SECTORS);
            for (int[] shape : FIRST_WRITE_SHAPES) {
                byte[] data = randomBytes(r, shape[1] * Bio.SECTOR_SIZE);
                assertEquals(BioStatus.OK, m.write(os[0], shape[0], data, r), "write " + shape[0] + "+" + shape[1]);
                System.arraycopy(data, 0, model, shape[0] * Bio.SECTOR_SIZE, data.length);
            }
            assertArrayEquals(initial, readBig(m, os[1]), "snapshot view after first writes");
            assertArrayEquals(model, readBig(m, os[0]), "origin after first writes");
        }
        if (mode.equals("P")) {
            try (Machine m = new Machine("snap-shapes-reopen", originData, cowData, true)) {
                MappedDevice[] os = m.originAndSnapshot(mode, CHUNK, BIG_SECTORS);
                assertArrayEquals(initial, readBig(m, os[1]), "snapshot view after reopen");
                assertArrayEquals(model, readBig(m, os[0]), "origin after reopen");
            }
        }
    }

    /**
     * Proves a chunk whose origin range is a hole is not read: writing all of an origin that is
     * one hole reads nothing from it, zeroes exactly its size on the COW device (whose garbage the
     * snapshot must then not show), and the snapshot reads zeros; with one data chunk in it, at
     * most one copy piece (64 KiB) is read.
     */
    @ParameterizedTest
    @ValueSource(ints = {-1, 77})
    void holeChunksAreZeroedNotRead(int dataChunk) throws Exception {
        Random r = new Random(32);
        byte[] initial = new byte[BIG_SECTORS * Bio.SECTOR_SIZE];
        if (dataChunk >= 0) {
            System.arraycopy(randomBytes(r, CHUNK * Bio.SECTOR_SIZE), 0, initial, dataChunk * CHUNK * Bio.SECTOR_SIZE,
                    CHUNK * Bio.SECTOR_SIZE);
        }
        byte[] cowData = randomBytes(r, BIG_COW_SECTORS * Bio.SECTOR_SIZE);
        try (Machine m = new Machine("snap-holes", initial.clone(), cowData, true)) {
            MappedDevice[] os = m.originAndSnapshot("N", CHUNK, BIG_SECTORS);
            for (int at = 0; at < BIG_SECTORS; at += 256) {
                assertEquals(BioStatus.OK, m.write(os[0], at, randomBytes(r, 256 * Bio.SECTOR_SIZE), r), "write at " + at);
            }
            int read = m.disk("origin").sectorsRead();
            int zeroed = m.disk("cow").sectorsZeroed();
            if (dataChunk < 0) {
                assertEquals(0, read, "sectors read from an origin that is all hole");
                assertEquals(BIG_SECTORS, zeroed, "sectors zeroed on the COW device");
                assertEquals(BIG_SECTORS / 256, m.disk("cow").zeroBios(),
                        "one WRITE_ZEROES per write's run, though each run is two copy pieces long");
            } else {
                assertTrue(read >= CHUNK && read <= CopyService.PIECE_PAGES_MAX * 8, "sectors read: " + read);
                assertEquals(BIG_SECTORS - read, zeroed, "sectors zeroed on the COW device");
            }
            assertArrayEquals(initial, readBig(m, os[1]), "snapshot view");
        }
    }

    /**
     * Proves a hole run longer than a copy piece is still copied right when the COW device refuses
     * WRITE_ZEROES: the run is then read and written a slot's worth at a time, every origin sector
     * is read once, and the snapshot shows the origin's zeros, not the COW device's garbage.
     */
    @Test
    void aLongHoleRunIsCopiedInStepsWhenZeroingIsRefused() throws Exception {
        Random r = new Random(34);
        byte[] initial = new byte[BIG_SECTORS * Bio.SECTOR_SIZE];
        byte[] cowData = randomBytes(r, BIG_COW_SECTORS * Bio.SECTOR_SIZE);
        try (Machine m = new Machine("snap-holes-refused", initial.clone(), cowData, true)) {
            MappedDevice[] os = m.originAndSnapshot("N", CHUNK, BIG_SECTORS);
            m.disk("cow").refuseZeroes();
            int runSectors = 1024; // eight copy pieces of 64 KiB
            for (int at = 0; at < BIG_SECTORS; at += runSectors) {
                assertEquals(BioStatus.OK, m.write(os[0], at, randomBytes(r, runSectors * Bio.SECTOR_SIZE), r),
                        "write at " + at);
            }
            assertEquals(0, m.disk("cow").zeroBios(), "nothing zeroed on a device that refuses it");
            assertEquals(BIG_SECTORS, m.disk("origin").sectorsRead(), "each origin sector read once");
            assertArrayEquals(initial, readBig(m, os[1]), "snapshot view: the origin's zeros");
        }
    }

    /**
     * Proves a snapshot write that covers a whole chunk copies nothing (the old chunk is all
     * overwritten): the origin is not read, the snapshot reads the write back at once, and a
     * partial snapshot write still copies its chunk first. For P, the exception made by the full
     * write survives a reopen.
     */
    @ParameterizedTest
    @ValueSource(strings = {"P", "N"})
    void snapshotWriteOfAWholeChunkCopiesNothing(String mode) throws Exception {
        Random r = new Random(33);
        byte[] initial = randomBytes(r, ORIGIN_SECTORS * Bio.SECTOR_SIZE);
        byte[] originData = initial.clone();
        byte[] cowData = randomBytes(r, COW_SECTORS * Bio.SECTOR_SIZE);
        byte[] snapModel = initial.clone();
        try (Machine m = new Machine("snap-full-write-" + mode, originData, cowData)) {
            MappedDevice[] os = m.originAndSnapshot(mode, CHUNK);
            byte[] whole = randomBytes(r, CHUNK * Bio.SECTOR_SIZE);
            int readBefore = m.disk("origin").sectorsRead();
            assertEquals(BioStatus.OK, m.write(os[1], 5 * CHUNK, whole, r));
            assertEquals(readBefore, m.disk("origin").sectorsRead(), "origin sectors read for a whole-chunk write");
            System.arraycopy(whole, 0, snapModel, 5 * CHUNK * Bio.SECTOR_SIZE, whole.length);
            byte[] back = new byte[whole.length];
            assertEquals(BioStatus.OK, m.read(os[1], 5 * CHUNK, back, r));
            assertArrayEquals(whole, back, "the whole-chunk write read back");
            byte[] part = randomBytes(r, 3 * Bio.SECTOR_SIZE);
            assertEquals(BioStatus.OK, m.write(os[1], 9 * CHUNK + 2, part, r));
            assertEquals(readBefore + CHUNK, m.disk("origin").sectorsRead(), "a partial write copies its chunk");
            System.arraycopy(part, 0, snapModel, (9 * CHUNK + 2) * Bio.SECTOR_SIZE, part.length);
            assertArrayEquals(snapModel, m.readAll(os[1]), "snapshot");
            assertArrayEquals(initial, m.readAll(os[0]), "origin untouched");
        }
        if (mode.equals("P")) {
            try (Machine m = new Machine("snap-full-write-reopen", originData, cowData)) {
                MappedDevice[] os = m.originAndSnapshot(mode, CHUNK);
                assertArrayEquals(snapModel, m.readAll(os[1]), "snapshot after reopen");
            }
        }
    }

    /**
     * Proves crash consistency with runs and holes: the power is cut after every write of a
     * workload of first writes of every shape (runs across chunks, holes zeroed on a COW device of
     * garbage, a whole-chunk snapshot write), and every reopen shows each chunk of the snapshot as
     * at creation (or, for the chunk the snapshot wrote whole, either as at creation or as written).
     */
    @Test
    void runsAndHolesAreConsistentAfterPowerCutAtAnyWrite() throws Exception {
        Random seed = new Random(34);
        byte[] initial = new byte[ORIGIN_SECTORS * Bio.SECTOR_SIZE];
        for (int c = 0; c < ORIGIN_SECTORS / CHUNK; c += 3) { // chunks 0, 3, 6, ... hold data, the rest are holes
            System.arraycopy(randomBytes(seed, CHUNK * Bio.SECTOR_SIZE), 0, initial, c * CHUNK * Bio.SECTOR_SIZE,
                    CHUNK * Bio.SECTOR_SIZE);
        }
        byte[] cowGarbage = randomBytes(seed, COW_SECTORS * Bio.SECTOR_SIZE);
        byte[] whole = randomBytes(seed, CHUNK * Bio.SECTOR_SIZE);
        int[][] shapes = {{1, 3}, {2 * CHUNK + 3, 6 * CHUNK}, {12 * CHUNK, 4 * CHUNK}, {20 * CHUNK + 7, 2}};
        int total = -1;
        for (int n = 0; total < 0 || n <= total; n++) {
            byte[] originData = initial.clone();
            byte[] cowData = cowGarbage.clone();
            try (Machine m = new Machine("snap-runs-crash-" + n, originData, cowData, true)) {
                MappedDevice[] os = m.originAndSnapshot("P", CHUNK);
                int before = m.power.writesSeen();
                if (total >= 0) {
                    m.power.cutAfter(n);
                }
                Random r = new Random(35);
                for (int[] shape : shapes) {
                    m.write(os[0], shape[0], randomBytes(r, shape[1] * Bio.SECTOR_SIZE), null);
                }
                m.write(os[1], 28 * CHUNK, whole, null);
                if (total < 0) {
                    total = m.power.writesSeen() - before;
                    assertTrue(total > 10, "workload too small: " + total + " writes");
                    n = -1;
                    continue;
                }
            }
            try (Machine m = new Machine("snap-runs-crash-reopen-" + n, originData, cowData, true)) {
                MappedDevice[] os = m.originAndSnapshot("P", CHUNK);
                byte[] got = m.readAll(os[1]);
                for (int c = 0; c < ORIGIN_SECTORS / CHUNK; c++) {
                    int from = c * CHUNK * Bio.SECTOR_SIZE;
                    int to = from + CHUNK * Bio.SECTOR_SIZE;
                    byte[] chunk = Arrays.copyOfRange(got, from, to);
                    if (c == 28 && Arrays.equals(whole, chunk)) {
                        continue;
                    }
                    assertArrayEquals(Arrays.copyOfRange(initial, from, to), chunk,
                            "chunk " + c + " after a power cut after write " + n + " of " + total);
                }
            }
        }
    }

    /**
     * Proves the copy engine copies jobs larger than its reserve, many queued at once, through one
     * slot: six jobs of five pages each (two pieces) through a reserve of four pages, and zeroes
     * the pieces of a hole instead of reading them when the job allows it.
     */
    @Test
    void copyEngineCopiesJobsLargerThanItsReserveThroughOneSlot() throws Exception {
        Random r = new Random(36);
        byte[] source = randomBytes(r, 512 * Bio.SECTOR_SIZE);
        // A hole: all of job 4 (sectors 160..200, pieces of 32 and 8 sectors) and the start of job 5's first piece.
        Arrays.fill(source, 160 * Bio.SECTOR_SIZE, 210 * Bio.SECTOR_SIZE, (byte) 0);
        byte[] destination = randomBytes(r, 512 * Bio.SECTOR_SIZE);
        try (Machine m = new Machine("copy-engine", source, destination, true)) {
            CopyService service = new CopyService(m.tk.kernel, "test", 4);
            try {
                assertEquals(1, service.slotCount(), "slots of a 4-page reserve");
                int jobs = 6;
                Completion[] done = new Completion[jobs];
                BioStatus[] results = new BioStatus[jobs];
                for (int j = 0; j < jobs; j++) {
                    int id = j;
                    done[j] = new Completion("copy " + j);
                    CopyJob job = new CopyJob() {
                        @Override
                        protected void copyDone(BioStatus result) {
                            results[id] = result;
                            done[id].complete();
                        }
                    };
                    job.setRanges(m.devices.get("origin"), 40L * j, m.devices.get("cow"), 40L * j + 256, 40, true);
                    service.copy(job);
                }
                for (Completion c : done) {
                    c.await();
                }
                for (int j = 0; j < jobs; j++) {
                    assertEquals(BioStatus.OK, results[j], "job " + j);
                }
            } finally {
                service.close();
            }
            byte[] copied = Arrays.copyOfRange(m.disk("cow").snapshotBytes(), 256 * Bio.SECTOR_SIZE, 496 * Bio.SECTOR_SIZE);
            assertArrayEquals(Arrays.copyOfRange(source, 0, 240 * Bio.SECTOR_SIZE), copied, "copied ranges");
            assertEquals(40, m.disk("cow").sectorsZeroed(), "the all-hole pieces (job 4) were zeroed, the part-hole one copied");
        }
    }
}
