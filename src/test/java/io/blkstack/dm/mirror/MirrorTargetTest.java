package io.blkstack.dm.mirror;

import io.blkstack.dm.TargetTestIo;
import io.blkstack.dm.FaultyDisk;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.bio.BioSet;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.TestKernel;
import io.blkstack.dm.MappedDevice;
import io.blkstack.dm.StatusForm;
import io.blkstack.dm.Table;
import io.blkstack.dm.TableException;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Policies;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.TaskKind;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.Test;

/**
 * The mirror target: writes reach every leg; a leg that starts failing in the middle of a
 * concurrent workload is marked failed and no acknowledged write is lost (every read, during and
 * after, returns the last acknowledged data); failed reads are retried on the other leg; status
 * shows the failed leg; a rebuild (also under concurrent writes) makes the rebuilt leg equal to
 * the healthy one and status shows it healthy and in sync again.
 */
class MirrorTargetTest {

    /** Sectors of each leg. */
    private static final int LEG_SECTORS = 2048;
    /** Sectors the mirror maps. */
    private static final int LENGTH = 1024;

    /** A kernel with legs a, b, c, a client bio set and synchronous I/O. */
    private static final class World implements AutoCloseable {
        final TestKernel tk = new TestKernel("mirror", 48L << 20, Policies.defaults(), Faults.NONE);
        final Map<String, BlockDevice> devices = new HashMap<>();
        final BioSet client = new BioSet(tk.kernel, "client", 8, 8, null, false);
        final TargetTestIo io = new TargetTestIo(tk.kernel, client);

        World() {
            for (String n : List.of("a", "b", "c")) {
                devices.put(n, new FaultyDisk(tk.kernel, n, LEG_SECTORS));
            }
        }

        FaultyDisk disk(String name) {
            return (FaultyDisk) devices.get(name);
        }

        Table table(String text) throws TableException {
            return Table.parse(tk.kernel, "dm", text, devices::get);
        }

        MappedDevice mapped(String text) throws TableException {
            return new MappedDevice(tk.kernel, "dm", table(text));
        }

        @Override
        public void close() {
            tk.close();
        }
    }

    private static MirrorTarget target(MappedDevice md) {
        return (MirrorTarget) md.table().target(0);
    }

    @Test
    void tableRoundTripsAndStatusShowsHealthyLegs() throws TableException {
        try (World w = new World()) {
            for (String line : List.of("0 1024 mirror core 1 64 2 a 0 b 16",
                    "0 1024 mirror core 2 128 nosync 3 a 8 b 0 c 1000 1 handle_errors",
                    "0 1000 mirror core 1 64 2 a 0 b 0 0")) {
                MappedDevice md = w.mapped(line + "\n");
                String expected = line.endsWith(" 0") ? line.substring(0, line.length() - 2) : line;
                assertEquals(List.of(expected), md.status(StatusForm.TABLE));
                try (Table again = w.table(String.join("\n", md.status(StatusForm.TABLE)))) {
                    assertEquals(md.status(StatusForm.TABLE), again.lines());
                }
                md.close();
            }
            MappedDevice md = w.mapped("0 1000 mirror core 1 64 2 a 0 b 16\n");
            assertEquals(List.of("0 1000 mirror 2 a b 16/16 1 AA 1 core"), md.status(StatusForm.INFO));
            md.close();
        }
    }

    @Test
    void badArgumentsAreNamed() {
        try (World w = new World()) {
            String[][] cases = {
                {"0 8 mirror disk 1 64 2 a 0 b 0", "argument 1"},
                {"0 8 mirror core 1 63 2 a 0 b 0", "argument 3"},
                {"0 8 mirror core 1 64 1 a 0", "argument 4"},
                {"0 8 mirror core 1 64 2 a 0 nosuch 0", "argument 7"},
                {"0 8 mirror core 1 64 2 a 0 b 0 1 keep_log", "argument 10"},
                {"0 8 mirror core 2 64 maybe 2 a 0 b 0", "argument 4"},
                {"0 8 mirror core 1 64 2 a 0 b 2044", "argument 8"},
                {"0 8 mirror core 1 64 3 a 0 b 0", "expected"},
            };
            for (String[] c : cases) {
                TableException e = assertThrows(TableException.class, () -> w.table(c[0]), c[0]);
                assertTrue(e.getMessage().contains(c[1]), c[0] + " -> " + e.getMessage());
            }
        }
    }

    @Test
    void writesReachEveryLegAndReadsReturnThem() throws TableException {
        try (World w = new World()) {
            MappedDevice md = w.mapped("0 1024 mirror core 1 64 3 a 0 b 100 c 7\n");
            Random random = new Random(3);
            byte[] data = new byte[200 * 512];
            random.nextBytes(data);
            assertEquals(BioStatus.OK, w.io.write(md, 30, data, random));
            assertArrayEquals(data, w.disk("a").contents(30, 200));
            assertArrayEquals(data, w.disk("b").contents(130, 200));
            assertArrayEquals(data, w.disk("c").contents(37, 200));
            byte[] back = new byte[data.length];
            assertEquals(BioStatus.OK, w.io.read(md, 30, back, random));
            assertArrayEquals(data, back);
            md.close();
        }
    }

    @Test
    void failedReadIsRetriedOnTheOtherLeg() throws TableException {
        try (World w = new World()) {
            MappedDevice md = w.mapped("0 1024 mirror core 1 64 2 a 0 b 0\n");
            byte[] data = new byte[8 * 512];
            new Random(1).nextBytes(data);
            assertEquals(BioStatus.OK, w.io.write(md, 0, data, null));
            w.disk("a").failAfter(0);
            byte[] back = new byte[data.length];
            assertEquals(BioStatus.OK, w.io.read(md, 0, back, null));
            assertArrayEquals(data, back);
            assertEquals(1, target(md).readRetries());
            assertFalse(target(md).isLegHealthy(0));
            assertEquals(List.of("0 1024 mirror 2 a b 16/16 1 DA 1 core"), md.status(StatusForm.INFO));
            // Both legs dead: reads and writes fail.
            w.disk("b").failAfter(0);
            assertEquals(BioStatus.IOERR, w.io.write(md, 0, data, null));
            assertEquals(BioStatus.IOERR, w.io.read(md, 0, back, null));
            md.close();
        }
    }

    /**
     * Four writer tasks each own a slice of the mirror and write random data to random ranges in
     * it, reading every range back after each acknowledged write; leg a starts failing after a few
     * dozen bios. Every write must still be acknowledged (leg b takes it), every read must return
     * the slice's model, and at the end the whole device and leg b equal the model.
     */
    @Test
    void legFailingMidWorkloadLosesNoAcknowledgedWrite() throws Exception {
        try (World w = new World()) {
            MappedDevice md = w.mapped("0 1024 mirror core 1 32 2 a 0 b 0\n");
            byte[] model = new byte[LENGTH * 512];
            w.disk("a").failAfter(40);
            runWriters(w, md, model, 4, 40, null);
            assertTrue(target(md).legErrors() > 0);
            assertFalse(target(md).isLegHealthy(0));
            assertTrue(target(md).isLegHealthy(1));
            String info = md.status(StatusForm.INFO).get(0);
            assertTrue(info.endsWith(" 1 DA 1 core"), info);
            long inSync = target(md).inSyncRegions();
            assertTrue(inSync < 32, "writes after the failure left regions out of sync: " + info);
            byte[] whole = new byte[model.length];
            assertEquals(BioStatus.OK, w.io.read(md, 0, whole, null));
            assertArrayEquals(model, whole, "whole device against the model");
            assertArrayEquals(model, w.disk("b").contents(0, LENGTH), "leg b against the model");
            md.close();
        }
    }

    /**
     * After leg a failed and was replaced (healed, stale contents), {@code rebuild 0} runs while
     * the writers keep going; afterwards leg a equals leg b and the model, status shows AA and all
     * regions in sync.
     */
    @Test
    void rebuildUnderConcurrentWritesRestoresTheLeg() throws Exception {
        try (World w = new World()) {
            MappedDevice md = w.mapped("0 1024 mirror core 1 32 2 a 0 b 0 1 handle_errors\n");
            byte[] model = new byte[LENGTH * 512];
            w.disk("a").failAfter(30);
            runWriters(w, md, model, 4, 25, null);
            assertFalse(target(md).isLegHealthy(0));
            w.disk("a").heal();
            // Rebuild starts while a second round of writers runs.
            runWriters(w, md, model, 4, 25, () -> assertEquals("", md.message(0, "rebuild", "0")));
            target(md).flushWork();
            assertFalse(target(md).isRebuilding());
            assertEquals(1, target(md).rebuildsDone());
            assertTrue(target(md).isLegHealthy(0));
            assertEquals(List.of("0 1024 mirror 2 a b 32/32 1 AA 1 core"), md.status(StatusForm.INFO));
            assertArrayEquals(w.disk("b").contents(0, LENGTH), w.disk("a").contents(0, LENGTH), "leg a equals leg b");
            assertArrayEquals(model, w.disk("a").contents(0, LENGTH), "rebuilt leg against the model");
            // Reads now come from leg a again.
            byte[] whole = new byte[model.length];
            assertEquals(BioStatus.OK, w.io.read(md, 0, whole, null));
            assertArrayEquals(model, whole);
            md.close();
        }
    }

    /**
     * A leg whose flush fails (it lost acknowledged writes) is failed and the flush still succeeds
     * on the other leg; a rebuild of that leg repairs the loss, so a stale flush error the leg still
     * holds when the rebuild starts does not fail it again at the next flush.
     */
    @Test
    void failedLegFlushFailsTheLegAndARebuildTakesItsStaleError() throws TableException {
        try (World w = new World()) {
            MappedDevice md = w.mapped("0 1024 mirror core 1 64 2 a 0 b 0 1 handle_errors\n");
            byte[] data = new byte[64 * 512];
            new Random(5).nextBytes(data);
            assertEquals(BioStatus.OK, w.io.write(md, 0, data, null));
            w.disk("b").failNextFlush();
            assertEquals(BioStatus.OK, w.io.flush(md), "leg a took the flush");
            assertTrue(target(md).isLegHealthy(0));
            assertFalse(target(md).isLegHealthy(1));
            assertEquals(BioStatus.OK, w.io.flush(md), "a failed leg gets no flush");
            // Leg b comes back still holding a write-back error from before; the rebuild takes it.
            w.disk("b").failNextFlush();
            assertEquals("", md.message(0, "recover"));
            target(md).flushWork();
            assertTrue(target(md).isLegHealthy(1), md.status(StatusForm.INFO).toString());
            assertEquals(BioStatus.OK, w.io.flush(md));
            assertTrue(target(md).isLegHealthy(1), "the flush after the rebuild leaves leg b healthy");
            assertArrayEquals(data, w.disk("b").contents(0, 64));
            // Both legs fail their flush: the flush fails.
            w.disk("a").failNextFlush();
            w.disk("b").failNextFlush();
            assertEquals(BioStatus.IOERR, w.io.flush(md));
            md.close();
        }
    }

    @Test
    void messagesAreChecked() throws TableException {
        try (World w = new World()) {
            MappedDevice md = w.mapped("0 1024 mirror core 1 64 2 a 0 b 0\n");
            assertThrows(IllegalArgumentException.class, () -> md.message(0, "rebuild", "2"));
            assertThrows(IllegalArgumentException.class, () -> md.message(0, "rebuild", "x"));
            assertThrows(IllegalArgumentException.class, () -> md.message(0, "resync"));
            assertEquals("", md.message(0, "recover")); // nothing failed: nothing to do
            w.disk("a").failAfter(0);
            w.disk("b").failAfter(0);
            assertEquals(BioStatus.IOERR, w.io.write(md, 0, new byte[512], null));
            assertThrows(IllegalArgumentException.class, () -> md.message(0, "rebuild", "0"), "no healthy source");
            md.close();
        }
    }

    /**
     * Runs {@code writers} tasks, each over its own slice, doing {@code rounds} write-then-verify
     * rounds; {@code midway} runs on the test task once every writer finished its first round.
     */
    private static void runWriters(World w, MappedDevice md, byte[] model, int writers, int rounds, Runnable midway)
            throws Exception {
        int slice = LENGTH / writers;
        AtomicReference<Throwable> failure = new AtomicReference<>();
        io.blkstack.kernel.Completion firstRound = new io.blkstack.kernel.Completion("first rounds");
        java.util.concurrent.atomic.AtomicInteger firstDone = new java.util.concurrent.atomic.AtomicInteger();
        List<Task> tasks = new ArrayList<>();
        for (int t = 0; t < writers; t++) {
            int base = t * slice;
            long seed = 1000L * t + rounds + (midway == null ? 0 : 7);
            tasks.add(w.tk.kernel.spawn("writer" + t, TaskKind.USER, () -> {
                try {
                    Random random = new Random(seed);
                    for (int r = 0; r < rounds; r++) {
                        int start = base + random.nextInt(slice);
                        int sectors = 1 + random.nextInt(Math.min(48, base + slice - start));
                        byte[] data = new byte[sectors * 512];
                        random.nextBytes(data);
                        BioStatus st = w.io.write(md, start, data, random);
                        if (st != BioStatus.OK) {
                            throw new AssertionError("write " + start + "+" + sectors + " -> " + st);
                        }
                        System.arraycopy(data, 0, model, start * 512, data.length);
                        byte[] back = new byte[slice * 512];
                        st = w.io.read(md, base, back, random);
                        if (st != BioStatus.OK) {
                            throw new AssertionError("read of slice " + base + " -> " + st);
                        }
                        byte[] expect = Arrays.copyOfRange(model, base * 512, (base + slice) * 512);
                        if (!Arrays.equals(expect, back)) {
                            throw new AssertionError("slice " + base + " differs from its model after round " + r);
                        }
                        if (r == 0 && firstDone.incrementAndGet() == writers) {
                            firstRound.complete();
                        }
                    }
                } catch (Throwable e) {
                    failure.compareAndSet(null, e);
                    if (firstDone.getAndSet(writers + 1) < writers) {
                        firstRound.complete();
                    }
                }
            }));
        }
        firstRound.await();
        if (midway != null && failure.get() == null) {
            midway.run();
        }
        tasks.forEach(w.tk.kernel.scheduler()::join);
        if (failure.get() != null) {
            throw new AssertionError("writer failed", failure.get());
        }
    }
}
