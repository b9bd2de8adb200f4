package io.blkstack.dm;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioFlags;
import io.blkstack.bio.BioSet;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.DataBuffers;
import io.blkstack.block.MemoryDevice;
import io.blkstack.block.TestKernel;
import io.blkstack.kernel.Completion;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Policies;
import io.blkstack.kernel.SpinLock;
import io.blkstack.kernel.TaskKind;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * The contract every data-storing target keeps through a mapped device (DESIGN.md section 9):
 * the table round-trips through {@code status TABLE}, reads return what was written (against a
 * byte-array model), bios crossing every target and chunk boundary are split and land in the right
 * place, flush and FUA reach the bottom devices, and suspend / reload / resume under concurrent
 * writers loses no bio. Zero and error are checked for their documented behaviour.
 */
class TargetContractTest {

    /** Sectors of every bottom device. */
    private static final int BOTTOM_SECTORS = 1024;

    /** One table over bottom devices a, b, c, d, with the capacity it maps. */
    record Case(String name, String table) {
        @Override
        public String toString() {
            return name;
        }
    }

    /** Every registered target that stores data, in a few shapes. */
    static Stream<Case> storing() {
        return Stream.of(
                new Case("linear", "0 512 linear a 16\n"),
                new Case("linear x4", "0 24 linear a 0\n24 40 linear b 100\n64 16 linear c 7\n80 432 linear d 0\n"),
                new Case("striped 1", "0 512 striped 1 8 a 0\n"),
                new Case("striped 3", "0 576 striped 3 16 a 0 b 8 c 32\n"),
                new Case("striped odd chunk", "0 480 striped 2 24 a 0 b 0\n"),
                new Case("mixed", "0 96 striped 2 16 a 0 b 0\n96 33 linear c 0\n129 383 linear d 1\n"),
                new Case("delay", "0 512 delay a 16 1 a 16 2\n"),
                new Case("flakey up", "0 512 flakey a 8 1 0\n"),
                new Case("log-writes", "0 512 log-writes a b\n"),
                new Case("mirror", "0 512 mirror core 1 64 3 a 0 b 16 c 0\n"),
                new Case("crypt", "0 512 crypt aes-xts-plain64 "
                        + "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f 7 a 16\n"),
                new Case("snapshot-origin", "0 1024 snapshot-origin a\n"),
                new Case("snapshot", "0 512 snapshot a b P 16\n"));
    }

    /** Every registered target, for the round trip. */
    static Stream<Case> all() {
        return Stream.concat(storing(), Stream.of(
                new Case("zero", "0 512 zero\n"),
                new Case("error", "0 512 error\n"),
                new Case("zero+error+linear", "0 8 zero\n8 8 error\n16 496 linear a 0\n"),
                new Case("delay 9", "0 512 delay a 0 1 b 0 2 c 0 3\n"),
                new Case("flakey features", "0 512 flakey a 0 0 1 6 error_reads corrupt_bio_byte 1 r 0 0\n")));
    }

    /** The test's world: a kernel, four recording bottoms, a client bio set, pages. */
    private static final class World implements AutoCloseable {
        final TestKernel tk;
        final List<String> log = new ArrayList<>();
        final SpinLock logLock = new SpinLock("test log");
        final Map<String, BlockDevice> devices = new HashMap<>();
        final DataBuffers buffers;
        final BioSet client;
        final DmIo io;

        World(String name) {
            this(name, Policies.defaults());
        }

        World(String name, Policies policies) {
            tk = new TestKernel(name, 32L << 20, policies, Faults.NONE);
            for (String d : List.of("a", "b", "c", "d")) {
                devices.put(d, new RecordingDevice(tk.kernel, d, BOTTOM_SECTORS, log, logLock));
            }
            buffers = new DataBuffers(tk.kernel);
            client = new BioSet(tk.kernel, "client", 4, 4, null, false);
            io = new DmIo(client, buffers);
        }

        Table table(String text) throws TableException {
            return Table.parse(tk.kernel, "dm", text, devices::get);
        }

        MappedDevice mapped(String text) throws TableException {
            MappedDevice md = new MappedDevice(tk.kernel, "dm", table(text));
            devices.put("dm", md);
            return md;
        }

        /**
         * The log as it is now, copied under its lock: some targets (log-writes, snapshot) still
         * write to their devices from a worker after the client's bio has completed.
         */
        List<String> entries() {
            logLock.lock();
            try {
                return new ArrayList<>(log);
            } finally {
                logLock.unlock();
            }
        }

        void clearLog() {
            logLock.lock();
            try {
                log.clear();
            } finally {
                logLock.unlock();
            }
        }

        RecordingDevice bottom(String name) {
            return (RecordingDevice) devices.get(name);
        }

        @Override
        public void close() {
            buffers.close();
            tk.close();
        }
    }

    private static List<String> lines(String text) {
        return Arrays.stream(text.split("\n")).filter(l -> !l.isBlank()).toList();
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("all")
    void tableRoundTripsThroughStatusTable(Case c) throws TableException {
        try (World w = new World("roundtrip")) {
            MappedDevice md = w.mapped(c.table());
            List<String> status = md.status(StatusForm.TABLE);
            assertEquals(lines(c.table()), status);
            assertEquals(md.table().targetCount(), md.status(StatusForm.INFO).size());
            assertEquals(c.table(), md.table().toString());
            // The status output is itself a table that loads to the same status (once the device
            // is gone, so targets that own their devices exclusively, like a snapshot's COW, can).
            md.close();
            try (Table reparsed = w.table(String.join("\n", status))) {
                assertEquals(status, reparsed.lines());
            }
        }
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("storing")
    void readsReturnWhatWasWritten(Case c) throws TableException {
        try (World w = new World("read-after-write")) {
            MappedDevice md = w.mapped(c.table());
            int capacity = (int) md.capacitySectors();
            byte[] model = new byte[capacity * Bio.SECTOR_SIZE];
            // Start from a known state written through the target: a never-written sector of an
            // encrypting target reads as the decryption of whatever the bottom device holds.
            assertEquals(BioStatus.OK, w.io.write(md, 0, model, 0, null), "zero the whole device");
            Random random = new Random(c.name().hashCode());
            for (int i = 0; i < 40; i++) {
                int sector = random.nextInt(capacity);
                int sectors = 1 + random.nextInt(Math.min(80, capacity - sector));
                byte[] data = new byte[sectors * Bio.SECTOR_SIZE];
                random.nextBytes(data);
                assertEquals(BioStatus.OK, w.io.write(md, sector, data, 0, random), "write " + sector + "+" + sectors);
                System.arraycopy(data, 0, model, sector * Bio.SECTOR_SIZE, data.length);
                byte[] back = new byte[data.length];
                assertEquals(BioStatus.OK, w.io.read(md, sector, back, random));
                assertArrayEquals(data, back, "read back " + sector + "+" + sectors);
            }
            byte[] whole = new byte[model.length];
            assertEquals(BioStatus.OK, w.io.read(md, 0, whole, null));
            assertArrayEquals(model, whole, "whole device against the model");
            assertEquals(0, md.inFlight());
            assertEquals(0, md.cloneSet().outstanding());
        }
    }

    @Test
    void bioCrossingEachBoundaryIsSplitAndLandsInPlace() throws TableException {
        // Four linear segments of odd sizes over four bottoms, at different offsets.
        String table = "0 24 linear a 3\n24 40 linear b 100\n64 16 linear c 7\n80 176 linear d 0\n";
        long[][] segments = {{0, 24, 3}, {24, 40, 100}, {64, 16, 7}, {80, 176, 0}};
        String[] names = {"a", "b", "c", "d"};
        try (World w = new World("boundaries")) {
            MappedDevice md = w.mapped(table);
            Random random = new Random(7);
            for (int k = 1; k < segments.length; k++) {
                long boundary = segments[k][0];
                for (int before = 1; before <= 9; before += 4) {
                    int after = 1 + random.nextInt(20);
                    long start = boundary - before;
                    byte[] data = new byte[(before + after) * Bio.SECTOR_SIZE];
                    random.nextBytes(data);
                    w.clearLog();
                    assertEquals(BioStatus.OK, w.io.write(md, start, data, 0, random));
                    // Every sector landed on the segment's device at its offset.
                    for (int s = 0; s < before + after; s++) {
                        long sector = start + s;
                        int seg = 0;
                        while (seg + 1 < segments.length && segments[seg + 1][0] <= sector) {
                            seg++;
                        }
                        long devSector = segments[seg][2] + sector - segments[seg][0];
                        byte[] devData = w.bottom(names[seg]).data();
                        assertArrayEquals(Arrays.copyOfRange(data, s * 512, s * 512 + 512),
                                Arrays.copyOfRange(devData, (int) devSector * 512, (int) devSector * 512 + 512),
                                "sector " + sector + " on " + names[seg]);
                    }
                    // No bottom bio crossed a target.
                    for (String entry : w.entries()) {
                        assertTrue(entry.contains(":WRITE:"), entry);
                    }
                    byte[] back = new byte[data.length];
                    assertEquals(BioStatus.OK, w.io.read(md, start, back, random));
                    assertArrayEquals(data, back);
                }
            }
        }
    }

    @Test
    void stripedBioIsSplitAtEveryChunk() throws TableException {
        try (World w = new World("chunks")) {
            MappedDevice md = w.mapped("0 384 striped 3 16 a 0 b 8 c 32\n");
            byte[] data = new byte[100 * Bio.SECTOR_SIZE];
            new Random(3).nextBytes(data);
            assertEquals(BioStatus.OK, w.io.write(md, 5, data, 0, null));
            // 5..105 crosses chunks at 16, 32, ... 96: 7 fragments, each inside one chunk.
            assertEquals(List.of("a:WRITE:5+11", "b:WRITE:8+16", "c:WRITE:32+16", "a:WRITE:16+16", "b:WRITE:24+16",
                    "c:WRITE:48+16", "a:WRITE:32+9"), w.entries());
        }
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("storing")
    void everyTargetSendsFlushToItsDevicesAndKeepsFua(Case c) throws TableException {
        try (World w = new World("flush-" + c.name())) {
            MappedDevice md = w.mapped(c.table());
            List<String> devices = md.table().devices().stream().map(BlockDevice::name).distinct().sorted().toList();
            assertEquals(BioStatus.OK, w.io.flush(md, 0));
            List<String> flushed = w.entries().stream().filter(e -> e.contains(":FLUSH:"))
                    .map(e -> e.substring(0, e.indexOf(':'))).distinct().sorted().toList();
            assertEquals(devices, flushed, "an empty flush reaches every device of the table: " + w.entries());

            w.clearLog();
            byte[] data = new byte[8 * Bio.SECTOR_SIZE];
            assertEquals(BioStatus.OK, w.io.write(md, 0, data, BioFlags.FUA, null));
            assertTrue(w.entries().stream().anyMatch(e -> e.contains(":WRITE:") && e.endsWith(":FUA")),
                    "a FUA write reaches a bottom device as FUA: " + w.entries());
        }
    }

    @Test
    void flushAndFuaReachEveryBottomDevice() throws TableException {
        try (World w = new World("flush")) {
            MappedDevice md = w.mapped("0 64 linear a 0\n64 64 striped 2 8 b 0 c 0\n128 8 zero\n136 8 linear d 0\n");
            assertEquals(BioStatus.OK, w.io.flush(md, 0));
            List<String> flushes = new ArrayList<>(w.entries());
            Collections.sort(flushes);
            assertEquals(List.of("a:FLUSH:0+0", "b:FLUSH:0+0", "c:FLUSH:0+0", "d:FLUSH:0+0"), flushes);

            w.clearLog();
            byte[] data = new byte[16 * Bio.SECTOR_SIZE];
            assertEquals(BioStatus.OK, w.io.write(md, 60, data, BioFlags.FUA, null));
            assertEquals(List.of("a:WRITE:60+4:FUA", "b:WRITE:0+8:FUA", "c:WRITE:0+4:FUA"), w.entries());

            // PREFLUSH with data: every device is flushed first, then the data goes without PREFLUSH.
            w.clearLog();
            assertEquals(BioStatus.OK, w.io.write(md, 8, data, BioFlags.PREFLUSH | BioFlags.FUA, null));
            assertEquals(5, w.entries().size(), w.entries().toString());
            List<String> first = new ArrayList<>(w.entries().subList(0, 4));
            Collections.sort(first);
            assertEquals(List.of("a:FLUSH:0+0:PREFLUSH", "b:FLUSH:0+0:PREFLUSH", "c:FLUSH:0+0:PREFLUSH",
                    "d:FLUSH:0+0:PREFLUSH"), first);
            assertEquals("a:WRITE:8+16:FUA", w.entries().get(4));
        }
    }

    @Test
    void zeroReadsZerosAndDropsWrites() throws TableException {
        try (World w = new World("zero")) {
            MappedDevice md = w.mapped("0 64 zero\n");
            byte[] data = new byte[8 * Bio.SECTOR_SIZE];
            Arrays.fill(data, (byte) 7);
            assertEquals(BioStatus.OK, w.io.write(md, 3, data, 0, null));
            byte[] back = new byte[data.length];
            assertEquals(BioStatus.OK, w.io.read(md, 3, back, new Random(1)));
            assertArrayEquals(new byte[data.length], back);
            assertEquals(BioStatus.OK, w.io.flush(md, 0));
            assertTrue(w.entries().isEmpty(), w.entries().toString());
        }
    }

    @Test
    void errorFailsEveryIoAndASpanningBioReportsIt() throws TableException {
        try (World w = new World("error")) {
            MappedDevice md = w.mapped("0 16 linear a 0\n16 16 error\n32 32 linear b 0\n");
            byte[] data = new byte[8 * Bio.SECTOR_SIZE];
            Arrays.fill(data, (byte) 9);
            assertEquals(BioStatus.IOERR, w.io.write(md, 16, data, 0, null));
            assertEquals(BioStatus.IOERR, w.io.read(md, 20, new byte[512], null));
            // A bio over linear, error, linear: the original fails, the linear parts were still written.
            byte[] wide = new byte[40 * Bio.SECTOR_SIZE];
            Arrays.fill(wide, (byte) 4);
            assertEquals(BioStatus.IOERR, w.io.write(md, 4, wide, 0, null));
            assertEquals(4, w.bottom("a").data()[4 * 512]);
            assertEquals(4, w.bottom("b").data()[0]);
            assertEquals(0, md.inFlight());
        }
    }

    @Test
    void suspendReloadResumeUnderConcurrentIoLosesNoBio() throws Exception {
        // Writers hammer their own regions while a controller suspends, loads a table that maps to
        // the same place in a different shape, and resumes, several times. Every write must complete
        // OK (none lost while held) and the device must hold the last pattern of every writer.
        final int writers = 3;
        final int region = 64;
        final int rounds = 40;
        try (TestKernel tk = new TestKernel("suspend", 64L << 20, Policies.defaults(),
                Faults.NONE)) {
            MemoryDevice mem = new MemoryDevice(tk.kernel, "mem", (long) writers * region * 512, 20_000);
            Map<String, BlockDevice> devs = Map.of("mem", mem);
            int total = writers * region;
            String[] shapes = {
                "0 " + total + " linear mem 0\n",
                "0 40 linear mem 0\n40 " + (total - 40) + " linear mem 40\n",
                "0 " + total + " striped 1 8 mem 0\n",
            };
            MappedDevice md = new MappedDevice(tk.kernel, "dm", Table.parse(tk.kernel, "dm", shapes[0], devs::get));
            AtomicInteger failures = new AtomicInteger();
            AtomicReference<Throwable> crash = new AtomicReference<>();
            AtomicInteger running = new AtomicInteger(writers);
            Completion writersDone = new Completion("writers done");
            // The writers start once the first suspend is in place, so at least one swap happens
            // while they run (else a slow test thread could find them all finished and never swap).
            Completion start = new Completion("writers start");
            byte[][] last = new byte[writers][];
            for (int i = 0; i < writers; i++) {
                final int id = i;
                tk.kernel.spawn("writer" + id, TaskKind.USER, () -> {
                    start.await();
                    try (DataBuffers buffers = new DataBuffers(tk.kernel)) {
                        BioSet set = new BioSet(tk.kernel, "writer" + id, 2, 2, null, false);
                        DmIo io = new DmIo(set, buffers);
                        Random random = new Random(id);
                        for (int r = 0; r < rounds; r++) {
                            byte[] data = new byte[region * 512];
                            random.nextBytes(data);
                            if (io.write(md, (long) id * region, data, 0, random) != BioStatus.OK) {
                                failures.incrementAndGet();
                            }
                            last[id] = data;
                        }
                        set.close();
                    } catch (Throwable t) {
                        crash.compareAndSet(null, t);
                    } finally {
                        if (running.decrementAndGet() == 0) {
                            writersDone.complete();
                        }
                    }
                });
            }
            int swaps = 0;
            do {
                md.suspend();
                if (swaps == 0) {
                    start.completeAll();
                }
                assertEquals(0, md.inFlight());
                md.loadTable(Table.parse(tk.kernel, "dm", shapes[++swaps % shapes.length], devs::get));
                md.resume();
            } while (!writersDone.isDone());
            writersDone.await();
            assertEquals(null, crash.get());
            assertEquals(0, failures.get());
            assertTrue(swaps > 0);
            try (DataBuffers buffers = new DataBuffers(tk.kernel)) {
                BioSet set = new BioSet(tk.kernel, "check", 2, 2, null, false);
                DmIo io = new DmIo(set, buffers);
                for (int i = 0; i < writers; i++) {
                    byte[] back = new byte[region * 512];
                    assertEquals(BioStatus.OK, io.read(md, (long) i * region, back, null));
                    assertArrayEquals(last[i], back, "writer " + i);
                }
                set.close();
            }
            assertEquals(0, md.heldCount());
        }
    }

    @Test
    void messageReachesTheTargetAtTheSector() throws TableException {
        try (World w = new World("message")) {
            MappedDevice md = w.mapped("0 16 linear a 0\n16 16 zero\n");
            IllegalArgumentException e = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
                    () -> md.message(20, "hello"));
            assertTrue(e.getMessage().contains("zero"), e.getMessage());
        }
    }
}
