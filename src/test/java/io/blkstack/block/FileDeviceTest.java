package io.blkstack.block;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioFlags;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioSet;
import io.blkstack.bio.BioStatus;
import io.blkstack.cli.MainProcess;
import io.blkstack.kernel.Completion;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Policies;
import io.blkstack.kernel.TaskKind;
import io.blkstack.mem.Gfp;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Random;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The file device over real temporary files: data round trips checked against a model and against
 * the file read back with plain Java I/O after close, sparse files and writes past their end, the
 * direct I/O bounce path, NOWAIT against a full queue, fault sites, and the page budget under load.
 */
class FileDeviceTest {

    private static final long SIZE = 4L << 20;

    @TempDir
    Path dir;

    private Kernel kernel;
    private Kernel.Attachment self;
    private BioSet set;

    /**
     * The kernel's policies: the defaults (a submitter that finds the queue idle serves a plain
     * READ or WRITE itself, policy {@code direct-issue}); {@link FileDeviceQueuedTest} runs every
     * test here again with every bio queued for the I/O tasks.
     */
    Policies policies() {
        return Policies.defaults();
    }

    private void start(Faults faults) {
        kernel = Kernel.builder().name("file-test").memory(8L << 20).faults(faults).policies(policies()).build();
        self = kernel.attach("test");
        set = new BioSet(kernel, "test", 4, 4, null, false);
    }

    @AfterEach
    void tearDown() {
        if (kernel == null) {
            return;
        }
        try {
            kernel.close();
        } finally {
            self.close();
        }
    }

    /** Closes the kernel (and so the device) now, so the test can read the file afterwards. */
    private void closeKernel() {
        kernel.close();
        self.close();
        kernel = null;
    }

    /**
     * Proves a file device owns its file: a second device on the same file in this process (or a
     * shared-lock reader), under its name or another (a path through a subdirectory and back),
     * fails with "FILE is in use in this process (already open as FIRST)" before it
     * changes anything; the refused opens do not drop the first device's OS lock (a separate
     * process finds the file "in use (locked by another process)"); once the first device closes,
     * the file opens again.
     */
    @Test
    void secondDeviceOnALockedFileFailsAndTheFirstKeepsItsLock() throws Exception {
        start(Faults.NONE);
        Path path = dir.resolve("a.img");
        FileDevice first = FileDevice.open(kernel, "a", path, SIZE, FileDevice.Options.defaults().withCreate(true));
        String inUse = path + " is in use in this process (already open as " + path + ")";
        LockedFile.FileInUseException e = assertThrows(LockedFile.FileInUseException.class,
                () -> FileDevice.open(kernel, "b", path, 2 * SIZE, FileDevice.Options.defaults().withCreate(true)));
        assertEquals(inUse, e.getMessage());
        assertEquals(path, e.path());
        assertEquals(SIZE, Files.size(path), "the refused open did not extend the file");
        e = assertThrows(LockedFile.FileInUseException.class,
                () -> FileDevice.open(kernel, "c", path, SIZE, FileDevice.Options.defaults().withLockShared(true)));
        assertEquals(inUse, e.getMessage());
        Files.createDirectories(dir.resolve("sub"));
        Path other = dir.resolve("sub").resolve("..").resolve("a.img");
        e = assertThrows(LockedFile.FileInUseException.class,
                () -> FileDevice.open(kernel, "d", other, SIZE, FileDevice.Options.defaults()));
        assertEquals(other + " is in use in this process (already open as " + path + ")", e.getMessage());

        String probe = lockProbe(path);
        assertTrue(probe.contains(path + " is in use (locked by another process)"), "another process could lock the file: " + probe);

        first.close();
        FileDevice again = FileDevice.open(kernel, "a2", path, SIZE, FileDevice.Options.defaults());
        again.close();
    }

    /** A lock taken through a channel of this process that the table does not know gets the same message. */
    @Test
    void overlappingLockInThisProcessGetsTheSameMessage() throws Exception {
        start(Faults.NONE);
        Path path = dir.resolve("a.img");
        Files.write(path, new byte[(int) SIZE]);
        try (java.nio.channels.FileChannel other = java.nio.channels.FileChannel.open(path,
                java.nio.file.StandardOpenOption.READ, java.nio.file.StandardOpenOption.WRITE);
                java.nio.channels.FileLock held = other.lock()) {
            LockedFile.FileInUseException e = assertThrows(LockedFile.FileInUseException.class,
                    () -> FileDevice.open(kernel, "a", path, SIZE, FileDevice.Options.defaults()));
            assertEquals(path + " is in use (locked by another process)", e.getMessage());
        }
    }

    /** A shared lock keeps a writer out: a reader here, then a device fails (in this process, so it says so). */
    @Test
    void sharedLockKeepsAWriterOut() throws Exception {
        start(Faults.NONE);
        Path path = dir.resolve("a.img");
        Files.write(path, new byte[(int) SIZE]);
        try (LockedFile reader = LockedFile.shared(path)) {
            assertTrue(reader.isShared());
            LockedFile.FileInUseException e = assertThrows(LockedFile.FileInUseException.class,
                    () -> FileDevice.open(kernel, "a", path, SIZE, FileDevice.Options.defaults()));
            assertEquals(path + " is in use in this process (already open as " + path + ")", e.getMessage());
        }
        FileDevice.open(kernel, "a", path, SIZE, FileDevice.Options.defaults()).close();
    }

    /**
     * Asks a separate JVM ({@code blkstack log-writes list FILE}, which takes a shared lock) about
     * the file; returns what it printed. "in use" means the OS lock of this process holds.
     */
    private static String lockProbe(Path path) throws Exception {
        Path out = Files.createTempFile(path.getParent(), "probe", ".txt");
        Process p = new ProcessBuilder(MainProcess.command("log-writes", "list", path.toString()))
                .redirectErrorStream(true).redirectOutput(out.toFile()).start();
        assertTrue(p.waitFor(60, java.util.concurrent.TimeUnit.SECONDS), "lock probe did not finish");
        return Files.readString(out);
    }

    @Test
    void randomWritesRoundTripAndReachTheFileWithFlushAndFua() throws IOException {
        start(Faults.NONE);
        Path path = dir.resolve("a.img");
        FileDevice dev = FileDevice.open(kernel, "a", path, SIZE, FileDevice.Options.defaults().withCreate(true));
        assertEquals(SIZE, Files.size(path), "created at the device size");
        Random random = new Random(7);
        byte[] model = new byte[(int) SIZE];
        for (int i = 0; i < 150; i++) {
            int length = 512 * (1 + random.nextInt(100));
            long position = 512L * random.nextInt((int) ((SIZE - length) / 512));
            byte[] data = new byte[length];
            random.nextBytes(data);
            int flags = random.nextInt(4) == 0 ? BioFlags.FUA : 0;
            assertEquals(BioStatus.OK, BioBytes.write(set, dev, position, data, 512 * random.nextInt(8), flags));
            System.arraycopy(data, 0, model, (int) position, length);
            if (i % 7 == 0) {
                long readAt = 512L * random.nextInt((int) ((SIZE - length) / 512));
                byte[] got = BioBytes.readOk(set, dev, readAt, length, 512 * random.nextInt(8));
                assertArrayEquals(Arrays.copyOfRange(model, (int) readAt, (int) readAt + length), got,
                        "read at " + readAt);
            }
        }
        assertEquals(BioStatus.OK, BioBytes.range(set, dev, BioOp.FLUSH, 0, 0, 0));
        assertArrayEquals(model, concatReads(dev), "whole device after the flush");
        closeKernel();
        assertArrayEquals(model, Files.readAllBytes(path), "file contents after close");
    }

    /** The whole device read back in 1 MiB bios. */
    private byte[] concatReads(FileDevice dev) {
        byte[] all = new byte[(int) SIZE];
        for (int at = 0; at < SIZE; at += 1 << 19) {
            byte[] part = BioBytes.readOk(set, dev, at, 1 << 19, 0);
            System.arraycopy(part, 0, all, at, part.length);
        }
        return all;
    }

    @Test
    void writesPastTheEndOfAShortSparseFileExtendItAndHolesReadAsZeros() throws IOException {
        start(Faults.NONE);
        Path path = dir.resolve("short.img");
        Files.write(path, MemoryDeviceTest.filled(1000, (byte) 1));
        FileDevice dev = FileDevice.open(kernel, "s", path, SIZE, FileDevice.Options.defaults());
        assertEquals(1000, Files.size(path), "an existing file is not extended without create");

        byte[] head = BioBytes.readOk(set, dev, 0, 4096, 0);
        byte[] wantHead = new byte[4096];
        Arrays.fill(wantHead, 0, 1000, (byte) 1);
        assertArrayEquals(wantHead, head, "the tail past the end of the file reads as zeros");

        byte[] data = MemoryDeviceTest.filled(8192, (byte) 0x77);
        long at = 3L << 20;
        assertEquals(BioStatus.OK, BioBytes.write(set, dev, at, data, 0, BioFlags.FUA));
        assertArrayEquals(new byte[65536], BioBytes.readOk(set, dev, 1L << 20, 65536, 512));
        assertArrayEquals(data, BioBytes.readOk(set, dev, at, 8192, 0));
        // Past the new end of the file, still inside the device.
        assertArrayEquals(new byte[4096], BioBytes.readOk(set, dev, SIZE - 4096, 4096, 0));
        closeKernel();

        byte[] file = Files.readAllBytes(path);
        assertEquals(at + 8192, file.length);
        assertArrayEquals(data, Arrays.copyOfRange(file, (int) at, (int) at + 8192));
        assertArrayEquals(new byte[(int) at - 1000], Arrays.copyOfRange(file, 1000, (int) at));
    }

    @Test
    void missingFileWithoutCreateIsRefused() {
        start(Faults.NONE);
        assertThrows(NoSuchFileException.class,
                () -> FileDevice.open(kernel, "x", dir.resolve("missing.img"), SIZE, FileDevice.Options.defaults()));
    }

    /** The plain-JDK path (no foreign-function calls): zeroing by writing, every range allocated. */
    @Test
    void discardAndWriteZeroesReadAsZerosAndLeaveOtherDataAlone() throws IOException {
        start(Faults.NONE);
        Path path = dir.resolve("z.img");
        FileDevice dev = FileDevice.open(kernel, "z", path, SIZE,
                FileDevice.Options.defaults().withCreate(true).withNativeHoles(false));
        assertTrue(!dev.knowsAllocation());
        byte[] data = MemoryDeviceTest.filled(6 * 4096, (byte) 0x44);
        assertEquals(BioStatus.OK, BioBytes.write(set, dev, 0, data, 0, 0));
        assertEquals(BioStatus.OK, BioBytes.range(set, dev, BioOp.DISCARD, 4096, 4096 + 512, 0));
        assertEquals(BioStatus.OK, BioBytes.range(set, dev, BioOp.WRITE_ZEROES, 4 * 4096, 4096, BioFlags.FUA));
        // A range that was never written: nothing to do, and still zeros.
        assertEquals(BioStatus.OK, BioBytes.range(set, dev, BioOp.WRITE_ZEROES, 1L << 20, 1 << 20, 0));
        byte[] want = data.clone();
        Arrays.fill(want, 4096, 4096 + 4096 + 512, (byte) 0);
        Arrays.fill(want, 4 * 4096, 5 * 4096, (byte) 0);
        assertArrayEquals(want, BioBytes.readOk(set, dev, 0, data.length, 0));
        closeKernel();
        assertArrayEquals(want, Arrays.copyOfRange(Files.readAllBytes(path), 0, want.length));
    }

    /**
     * A flush with nothing changed since the last completed one makes no {@code fdatasync}: the
     * first flush always forces, a second in a row is skipped, a write makes the next one force, a
     * PREFLUSH right after a flush is skipped while the same bio's FUA forces its write, and a
     * DISCARD of a range that is a hole already changes nothing (no punch, the next flush skipped)
     * where one of written data punches and forces.
     */
    @Test
    void flushesWithNothingChangedAreSkippedAndHolesAreNotPunchedAgain() throws IOException {
        start(Faults.NONE);
        FileDevice dev = FileDevice.open(kernel, "f", dir.resolve("flush.img"), SIZE,
                FileDevice.Options.defaults().withCreate(true));
        AtomicLong skipped = kernel.counters().get("file.flushes-skipped");
        AtomicLong punches = kernel.counters().get("file.punches");
        assertEquals(BioStatus.OK, BioBytes.range(set, dev, BioOp.FLUSH, 0, 0, 0));
        assertEquals(0, skipped.get(), "the first flush forces: others may have left the file unflushed");
        assertEquals(BioStatus.OK, BioBytes.range(set, dev, BioOp.FLUSH, 0, 0, 0));
        assertEquals(1, skipped.get(), "nothing changed since");
        byte[] data = MemoryDeviceTest.filled(8192, (byte) 0x3c);
        assertEquals(BioStatus.OK, BioBytes.write(set, dev, 65536, data, 0, 0));
        assertEquals(BioStatus.OK, BioBytes.range(set, dev, BioOp.FLUSH, 0, 0, 0));
        assertEquals(1, skipped.get(), "a write makes the next flush force");
        assertEquals(BioStatus.OK, BioBytes.write(set, dev, 0, data, 0, BioFlags.PREFLUSH | BioFlags.FUA));
        assertEquals(2, skipped.get(), "the PREFLUSH is skipped, the FUA forces the write");
        assertEquals(BioStatus.OK, BioBytes.range(set, dev, BioOp.FLUSH, 0, 0, 0));
        assertEquals(3, skipped.get(), "the FUA covered its write");
        if (dev.knowsAllocation()) {
            assertEquals(BioStatus.OK, BioBytes.range(set, dev, BioOp.DISCARD, 1L << 20, 65536, 0));
            assertEquals(0, punches.get(), "a hole is not punched again");
            assertEquals(BioStatus.OK, BioBytes.range(set, dev, BioOp.FLUSH, 0, 0, 0));
            assertEquals(4, skipped.get(), "the discard of a hole changed nothing");
            assertEquals(BioStatus.OK, BioBytes.range(set, dev, BioOp.DISCARD, 65536, 4096, 0));
            assertEquals(1, punches.get(), "written data is punched");
            assertEquals(BioStatus.OK, BioBytes.range(set, dev, BioOp.FLUSH, 0, 0, 0));
            assertEquals(4, skipped.get(), "and the punch is flushed");
        }
        assertArrayEquals(data, BioBytes.readOk(set, dev, 0, data.length, 0), "the FUA write reads back");
    }

    /**
     * With the file system's holes (Linux, ext4/xfs/tmpfs): a sparse file maps as data where it was
     * written and hole elsewhere, past its end too; a DISCARD and a WRITE_ZEROES without NOUNMAP
     * punch holes (the range reads as zeros, maps as hole, the file keeps its size, the counter
     * counts them); a WRITE_ZEROES with NOUNMAP (NBD's NO_HOLE) leaves the range allocated. The
     * same operations with native holes off give the same data and map everything allocated.
     */
    @Test
    void holesComeFromTheFileSystemAndDiscardsPunchThem() throws IOException {
        start(Faults.NONE);
        Path path = dir.resolve("holes.img");
        FileDevice dev = FileDevice.open(kernel, "h", path, SIZE, FileDevice.Options.defaults().withCreate(true));
        assumeTrue(dev.knowsAllocation(),
                "this platform or file system does not tell holes (SEEK_HOLE through the foreign-function API)");
        long sectors = SIZE >>> Bio.SECTOR_SHIFT;
        assertEquals(-sectors, dev.allocatedExtent(0, sectors), "a fresh sparse file is one hole");

        byte[] data = MemoryDeviceTest.filled(1 << 20, (byte) 0x5a);
        assertEquals(BioStatus.OK, BioBytes.write(set, dev, 1L << 20, data, 0, BioFlags.FUA));
        assertEquals(-2048, dev.allocatedExtent(0, sectors), "the first MiB is a hole");
        assertEquals(2048, dev.allocatedExtent(2048, sectors), "the written MiB is data");
        assertEquals(1000, dev.allocatedExtent(2048, 1000), "a query is cut at its maximum");
        assertEquals(-(sectors - 4096), dev.allocatedExtent(4096, sectors), "past the written MiB: hole to the end");

        assertEquals(BioStatus.OK, BioBytes.range(set, dev, BioOp.DISCARD, (1L << 20) + 65536, 131072, 0));
        assertEquals(BioStatus.OK, BioBytes.range(set, dev, BioOp.WRITE_ZEROES, (1L << 20) + 524288, 65536, 0));
        assertEquals(BioStatus.OK,
                BioBytes.range(set, dev, BioOp.WRITE_ZEROES, (1L << 20) + 786432, 65536, BioFlags.NOUNMAP));
        assertEquals(2, kernel.counters().get("file.punches").get(), "the discard and the write-zeroes punched");
        long base = 2048;
        assertEquals(128, dev.allocatedExtent(base, sectors), "data up to the discard");
        assertEquals(-256, dev.allocatedExtent(base + 128, sectors), "the discard is a hole");
        assertEquals(-128, dev.allocatedExtent(base + 1024, sectors), "the write-zeroes without NOUNMAP is a hole");
        assertTrue(dev.allocatedExtent(base + 1536, 128) == 128, "the NOUNMAP write-zeroes stays allocated");

        byte[] want = data.clone();
        Arrays.fill(want, 65536, 65536 + 131072, (byte) 0);
        Arrays.fill(want, 524288, 524288 + 65536, (byte) 0);
        Arrays.fill(want, 786432, 786432 + 65536, (byte) 0);
        assertArrayEquals(want, BioBytes.readOk(set, dev, 1L << 20, want.length, 0));
        assertEquals(SIZE, Files.size(path), "punching keeps the file's size");
        closeKernel();

        start(Faults.NONE);
        FileDevice plain = FileDevice.open(kernel, "p", path, SIZE, FileDevice.Options.defaults().withNativeHoles(false));
        assertTrue(!plain.knowsAllocation());
        assertEquals(sectors, plain.allocatedExtent(0, sectors), "without native holes every range is allocated");
        assertArrayEquals(want, BioBytes.readOk(set, plain, 1L << 20, want.length, 0));
    }

    @Test
    void misalignedSegmentsOnADirectDeviceGoThroughBouncePages() throws IOException {
        start(Faults.NONE);
        Path path = dir.resolve("direct.img");
        FileDevice dev;
        boolean direct;
        try {
            dev = FileDevice.open(kernel, "d", path, SIZE, FileDevice.Options.defaults().withCreate(true)
                    .withDirect(true).withBounceAlignment(4096));
            direct = true;
        } catch (IOException e) {
            // No O_DIRECT on this file system (tmpfs): the same bounce path on a buffered channel.
            dev = FileDevice.open(kernel, "d", path, SIZE, FileDevice.Options.defaults().withCreate(true)
                    .withBounceAlignment(4096));
            direct = false;
        }
        assertEquals(direct, dev.isDirect());
        assertEquals(4096, dev.alignment());
        assertEquals(4096, dev.limits().logicalBlockSize(), "bios must come aligned to the direct I/O unit");
        long bouncesBefore = kernel.counters().value("file.bounces");

        // Aligned segments go straight to the file.
        Random random = new Random(3);
        byte[] aligned = new byte[16384];
        random.nextBytes(aligned);
        assertEquals(BioStatus.OK, BioBytes.write(set, dev, 8192, aligned, 0, 0));
        assertEquals(bouncesBefore, kernel.counters().value("file.bounces"), "aligned I/O bounced");

        // Segments at page offset 512 (3584 bytes each): every 4 KiB window bounces.
        byte[] data = new byte[5 * 4096];
        random.nextBytes(data);
        assertEquals(BioStatus.OK, BioBytes.write(set, dev, 65536, data, 512, BioFlags.FUA));
        long afterWrite = kernel.counters().value("file.bounces");
        assertEquals(bouncesBefore + 5, afterWrite, "one bounce per 4 KiB window of the write");
        assertArrayEquals(data, BioBytes.readOk(set, dev, 65536, data.length, 512));
        assertTrue(kernel.counters().value("file.bounces") > afterWrite, "misaligned read did not bounce");
        assertArrayEquals(data, BioBytes.readOk(set, dev, 65536, data.length, 0));
        assertArrayEquals(aligned, BioBytes.readOk(set, dev, 8192, aligned.length, 1024));
        assertEquals(BioStatus.OK, BioBytes.range(set, dev, BioOp.WRITE_ZEROES, 65536, 4096, 0));
        closeKernel();
        byte[] file = Files.readAllBytes(path);
        assertArrayEquals(new byte[4096], Arrays.copyOfRange(file, 65536, 65536 + 4096));
        assertArrayEquals(Arrays.copyOfRange(data, 4096, data.length), Arrays.copyOfRange(file, 65536 + 4096,
                65536 + data.length));
        assertArrayEquals(aligned, Arrays.copyOfRange(file, 8192, 8192 + aligned.length));
    }

    @Test
    void nowaitBioAgainstAFullQueueCompletesWithAgainAndNeverWaits() throws IOException {
        Completion gate = new Completion("gate");
        java.util.concurrent.atomic.AtomicBoolean hold = new java.util.concurrent.atomic.AtomicBoolean();
        Completion inside = new Completion("inside");
        start(new Faults() {
            @Override
            public boolean shouldFail(String site) {
                return false;
            }

            /** Holds the device's only I/O task until the test opens the gate. */
            @Override
            public long extraLatencyNanos(String site) {
                if (site.equals("latency:q") && hold.compareAndSet(true, false)) {
                    inside.complete();
                    gate.await();
                }
                return 0;
            }
        });
        FileDevice dev = FileDevice.open(kernel, "q", dir.resolve("q.img"), SIZE,
                FileDevice.Options.defaults().withCreate(true).withIoTasks(1).withQueueDepth(1));
        assertEquals(BioStatus.OK, BioBytes.range(set, dev, BioOp.FLUSH, 0, 0, BioFlags.NOWAIT), "room: served");

        hold.set(true);
        Completion firstDone = new Completion("first");
        AtomicReference<BioStatus> firstStatus = new AtomicReference<>();
        Bio first = set.alloc(Gfp.KERNEL, 0);
        first.init(dev, BioOp.FLUSH, 0, 0);
        first.setEndIo(b -> {
            firstStatus.set(b.status());
            firstDone.complete();
        });
        Submit.submitBio(first);
        inside.await();
        assertEquals(1, dev.inFlight());

        long againBefore = kernel.counters().value("file.again");
        assertEquals(BioStatus.AGAIN, BioBytes.range(set, dev, BioOp.FLUSH, 0, 0, BioFlags.NOWAIT));
        assertEquals(againBefore + 1, kernel.counters().value("file.again"));

        gate.complete();
        firstDone.await();
        first.put();
        assertEquals(BioStatus.OK, firstStatus.get());
    }

    @Test
    void ioFaultSiteFailsBiosWithIoErr() throws IOException {
        start(new Faults() {
            @Override
            public boolean shouldFail(String site) {
                return site.equals("io:f");
            }

            @Override
            public long extraLatencyNanos(String site) {
                return 0;
            }
        });
        FileDevice dev = FileDevice.open(kernel, "f", dir.resolve("f.img"), SIZE,
                FileDevice.Options.defaults().withCreate(true));
        byte[] into = new byte[4096];
        assertEquals(BioStatus.IOERR, BioBytes.read(set, dev, 0, into, 0, 0));
        assertEquals(BioStatus.IOERR, BioBytes.range(set, dev, BioOp.FLUSH, 0, 0, 0));
    }

    @Test
    void concurrentLoadKeepsThePageBudgetAndCloseWaitsForInFlightBios() throws IOException {
        start(Faults.NONE);
        FileDevice dev = FileDevice.open(kernel, "l", dir.resolve("l.img"), SIZE,
                FileDevice.Options.defaults().withCreate(true).withIoTasks(3).withQueueDepth(4)
                        .withBounceAlignment(4096));
        int tasks = 6;
        Completion done = new Completion("load");
        AtomicInteger bad = new AtomicInteger();
        long region = SIZE / tasks / 4096 * 4096;
        for (int t = 0; t < tasks; t++) {
            final int id = t;
            kernel.spawn("load" + t, TaskKind.USER, () -> {
                try {
                    Random random = new Random(200 + id);
                    for (int i = 0; i < 100; i++) {
                        int length = 4096 * (1 + random.nextInt(8));
                        long position = id * region + 4096L * random.nextInt((int) ((region - length) / 4096));
                        byte[] data = new byte[length];
                        random.nextBytes(data);
                        int flags = i % 10 == 0 ? BioFlags.FUA : 0;
                        if (BioBytes.write(set, dev, position, data, 512 * random.nextInt(8), flags) != BioStatus.OK) {
                            bad.incrementAndGet();
                            continue;
                        }
                        if (!Arrays.equals(data, BioBytes.readOk(set, dev, position, length, 512 * random.nextInt(8)))) {
                            bad.incrementAndGet();
                        }
                    }
                } finally {
                    done.complete();
                }
            });
        }
        for (int t = 0; t < tasks; t++) {
            assertTrue(done.await(60_000_000_000L), "load tasks did not finish: " + kernel.crashes());
        }
        assertEquals(0, bad.get());
        assertTrue(kernel.crashes().isEmpty(), kernel.crashes().toString());
        kernel.pages().checkInvariants();

        // Bios still in flight at close complete before close returns.
        AtomicInteger completed = new AtomicInteger();
        Bio[] bios = new Bio[8];
        for (int i = 0; i < bios.length; i++) {
            bios[i] = set.alloc(Gfp.KERNEL, 0);
            bios[i].init(dev, BioOp.WRITE_ZEROES, 0, (long) i * 8);
            bios[i].setSizeBytes(4096);
            bios[i].setEndIo(b -> completed.incrementAndGet());
            Submit.submitBio(bios[i]);
        }
        dev.close();
        assertEquals(bios.length, completed.get());
        for (Bio bio : bios) {
            bio.put();
        }
        kernel.pages().checkInvariants();
    }
}
