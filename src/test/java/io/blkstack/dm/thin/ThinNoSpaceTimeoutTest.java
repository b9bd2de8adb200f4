package io.blkstack.dm.thin;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.bio.BioSet;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.MemoryDevice;
import io.blkstack.dm.MappedDevice;
import io.blkstack.dm.StatusForm;
import io.blkstack.dm.Table;
import io.blkstack.dm.TableException;
import io.blkstack.dm.thin.ThinPoolTarget;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.TaskKind;
import io.blkstack.sim.Outcome;
import io.blkstack.sim.SimConfig;
import io.blkstack.sim.SimResult;
import io.blkstack.sim.SimRunner;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.Consumer;
import org.junit.jupiter.api.Test;

/**
 * A full thin pool's {@code no_space_timeout} (dm-thin's), under the deterministic simulator so
 * that minutes of waiting cost no real time: the virtual clock jumps to the next timer when no
 * task can run.
 *
 * <p>Each workload builds a pool of four 8 KiB blocks over memory devices, fills it from one thin
 * volume, then writes a fifth block, which needs a block the pool does not have. Every expectation
 * that fails throws inside the simulation, which the checker reports as a crash with the wait-for
 * knot, so a failing run explains itself.
 */
class ThinNoSpaceTimeoutTest {

    static final int BLOCK = 16; // sectors
    static final int BLOCKS = 4;
    static final long SECOND = 1_000_000_000L;

    /** A pool over memory devices and one thin volume on it, inside a kernel (simulated or not). */
    static final class SimPool implements AutoCloseable {
        final Map<String, BlockDevice> devices = new HashMap<>();
        final List<MappedDevice> mapped = new ArrayList<>();
        final BioSet client;
        final ThinIo io;
        final MappedDevice pool;
        final MappedDevice vol;

        SimPool(Kernel k, String features) throws TableException {
            devices.put("meta", new MemoryDevice(k, "meta", 1L << 20, 0));
            devices.put("data", new MemoryDevice(k, "data", BLOCKS * BLOCK * 512L, 0));
            client = new BioSet(k, "client", 4, 4, null, false);
            io = new ThinIo(k, client);
            pool = map(k, "pool", "0 " + BLOCKS * BLOCK + " thin-pool meta data " + BLOCK + " 0" + features);
            pool.message(0, "create_thin", "1");
            vol = map(k, "vol", "0 " + 4 * BLOCKS * BLOCK + " thin pool 1");
        }

        MappedDevice map(Kernel k, String name, String table) throws TableException {
            MappedDevice md = new MappedDevice(k, name, Table.parse(k, name, table, devices::get));
            devices.put(name, md);
            mapped.add(md);
            return md;
        }

        Pool runtime() {
            return ((ThinPoolTarget) pool.table().target(0)).pool();
        }

        String status() {
            return pool.status(StatusForm.INFO).get(0);
        }

        /** Writes every block of the pool once; each must succeed. */
        void fill() {
            for (int b = 0; b < BLOCKS; b++) {
                require(io.write(vol, (long) b * BLOCK, ThinTargetTest.pattern(b, 4096), 0) == BioStatus.OK,
                        "filling block " + b);
            }
        }

        @Override
        public void close() {
            for (int i = mapped.size() - 1; i >= 0; i--) {
                mapped.get(i).close();
            }
            client.close();
            devices.get("data").close();
            devices.get("meta").close();
        }
    }

    static void require(boolean condition, String what) {
        if (!condition) {
            throw new IllegalStateException("expectation failed: " + what);
        }
    }

    static SimResult runOnce(long seed, Consumer<Kernel> workload) {
        SimRunner runner = new SimRunner(SimConfig.builder().memory(4L << 20).build());
        return runner.runOnce(seed, workload);
    }

    // Proves the timeout ends the wait: with no_space_timeout=5 the write into the full pool waits
    // (virtual time), then fails with ENOSPC once 5 s have passed, not before; the status says
    // out_of_data_space and, as dm-thin's does after the timeout, error_if_no_space. A further write
    // needing space fails at once, and after a discard and a flush give a block back the pool is
    // writable again (rw, queue_if_no_space).
    @Test
    void fullPoolFailsTheQueuedWriteWithNospcAfterTheTimeout() {
        AtomicReference<String> seen = new AtomicReference<>();
        SimResult r = runOnce(11, k -> {
            try (SimPool p = new SimPool(k, " 1 no_space_timeout=5")) {
                p.fill();
                long before = k.scheduler().nanoTime();
                BioStatus s = p.io.write(p.vol, (long) BLOCKS * BLOCK, ThinTargetTest.pattern(9, 4096), 0);
                long waited = k.scheduler().nanoTime() - before;
                require(s == BioStatus.NOSPC, "the queued write ended with " + s + ", not NOSPC");
                require(waited >= 5 * SECOND, "the write failed after " + waited + " ns, before the 5 s timeout");
                String status = p.status();
                require(status.contains(" out_of_data_space ") && status.contains(" error_if_no_space "),
                        "status after the timeout: " + status);
                long again = k.scheduler().nanoTime();
                s = p.io.write(p.vol, (long) (BLOCKS + 1) * BLOCK, ThinTargetTest.pattern(10, 4096), 0);
                require(s == BioStatus.NOSPC && k.scheduler().nanoTime() - again < SECOND,
                        "a write after the timeout ended with " + s + " after " + (k.scheduler().nanoTime() - again) + " ns");
                require(p.io.discard(p.vol, 0, BLOCK) == BioStatus.OK, "discard");
                require(p.io.flush(p.vol) == BioStatus.OK, "flush");
                String back = p.status();
                require(back.contains(" rw ") && back.contains(" queue_if_no_space "), "status after freeing: " + back);
                require(p.io.write(p.vol, (long) BLOCKS * BLOCK, ThinTargetTest.pattern(9, 4096), 0) == BioStatus.OK,
                        "a write after a block was freed");
                seen.set(status);
            } catch (TableException e) {
                throw new IllegalStateException(e);
            }
        });
        assertEquals(Outcome.OK, r.outcome(), r.summary() + "\n" + r.explanation());
        assertTrue(seen.get().contains("out_of_data_space"), seen.get());
        assertEquals(1L, r.counters().get("thin.no-space-timeouts"), r.counters().toString());
    }

    // Proves 0 means "wait for ever", as in dm-thin: the write into the full pool is still queued
    // after ten minutes of virtual time (the checker finds no deadlock, because a task that owes
    // work still has a timer), and it completes with OK, its data readable, as soon as a second
    // task discards a block and flushes, which commits and gives the block back.
    @Test
    void zeroTimeoutWaitsUntilSpaceIsFreed() {
        AtomicReference<String> during = new AtomicReference<>();
        SimResult r = runOnce(12, k -> {
            try (SimPool p = new SimPool(k, " 1 no_space_timeout=0")) {
                p.fill();
                BioStatus[] result = new BioStatus[1];
                byte[] data = ThinTargetTest.pattern(9, 4096);
                Task writer = k.spawn("writer", TaskKind.USER,
                        () -> result[0] = p.io.write(p.vol, (long) BLOCKS * BLOCK, data, 0));
                Task.current().sleepFor(600 * SECOND);
                require(result[0] == null, "the write ended with " + result[0] + " while the pool was full");
                require(p.runtime().waitingForSpace() == 1, "writes waiting for space: " + p.runtime().waitingForSpace());
                during.set(p.status());
                require(p.io.discard(p.vol, 0, BLOCK) == BioStatus.OK, "discard");
                require(p.io.flush(p.vol) == BioStatus.OK, "flush");
                k.scheduler().join(writer);
                require(result[0] == BioStatus.OK, "the write ended with " + result[0] + " after a block was freed");
                byte[] back = new byte[4096];
                require(p.io.read(p.vol, (long) BLOCKS * BLOCK, back) == BioStatus.OK, "read back");
                require(java.util.Arrays.equals(data, back), "the write's data did not read back");
            } catch (TableException e) {
                throw new IllegalStateException(e);
            }
        });
        assertEquals(Outcome.OK, r.outcome(), r.summary() + "\n" + r.explanation());
        assertTrue(during.get().contains(" out_of_data_space ") && during.get().contains(" queue_if_no_space "),
                during.get());
        assertTrue(r.virtualNanos() >= 600 * SECOND, "virtual time " + r.virtualNanos());
        assertFalse(r.counters().containsKey("thin.no-space-timeouts") && r.counters().get("thin.no-space-timeouts") > 0,
                r.counters().toString());
    }

    // The same two stories raced, under 20 schedules each of the random walk and of PCT (depth 3)
    // for each moment the block is freed: two writers race into the full pool with
    // no_space_timeout=2 while the main task frees one block at once, after 1 s (before the
    // timeout) or after 3 s (after it), so the timeout, the commit that gives space back and the
    // queueing interleave every way the strategies reach. In every schedule both writes end; freed
    // before the timeout, exactly one gets the block and the other fails with NOSPC (it queues again
    // and its own timeout ends it); freed after, both have failed with NOSPC. The pool's metadata
    // checks clean, and the checker finds no deadlock, livelock or misuse.
    @Test
    void racingWritersTimeoutAndFreeingAlwaysEnd() {
        for (String strategy : List.of("random", "pct:3")) {
            for (long freeAfterSeconds : new long[] {0, 1, 3}) {
                raceCampaign(strategy, freeAfterSeconds);
            }
        }
    }

    /** One campaign of {@link #racingWritersTimeoutAndFreeingAlwaysEnd}. */
    private static void raceCampaign(String strategy, long freeAfterSeconds) {
        SimRunner runner = new SimRunner(SimConfig.builder().memory(4L << 20).strategy(strategy).build());
        SimRunner.CampaignResult c = runner.campaign(21 + freeAfterSeconds, 20, true, false, k -> {
            try (SimPool p = new SimPool(k, " 1 no_space_timeout=2")) {
                p.fill();
                BioStatus[] results = new BioStatus[2];
                List<Task> writers = new ArrayList<>();
                for (int w = 0; w < 2; w++) {
                    int which = w;
                    writers.add(k.spawn("writer" + w, TaskKind.USER, () -> results[which] = p.io.write(p.vol,
                            (long) (BLOCKS + which) * BLOCK, ThinTargetTest.pattern(20 + which, 4096), 0)));
                }
                if (freeAfterSeconds > 0) {
                    Task.current().sleepFor(freeAfterSeconds * SECOND);
                }
                require(p.io.discard(p.vol, 0, BLOCK) == BioStatus.OK, "discard");
                require(p.io.flush(p.vol) == BioStatus.OK, "flush");
                for (Task t : writers) {
                    k.scheduler().join(t);
                }
                int ok = 0;
                for (BioStatus r : results) {
                    require(r == BioStatus.OK || r == BioStatus.NOSPC, "a write ended with " + r);
                    ok += r == BioStatus.OK ? 1 : 0;
                }
                int expected = freeAfterSeconds < 2 ? 1 : 0;
                require(ok == expected, ok + " write(s) got a block freed after " + freeAfterSeconds + " s, not "
                        + expected);
                p.runtime().drain();
                require(p.runtime().check().isEmpty(), "check: " + p.runtime().check());
            } catch (TableException e) {
                throw new IllegalStateException(e);
            }
        });
        SimResult first = c.firstFinding();
        assertTrue(c.findings().isEmpty(), strategy + ", freed after " + freeAfterSeconds + " s: "
                + (first == null ? "" : first.summary() + "\n" + first.explanation() + "\nreplay: "
                + runner.replayArguments(first)));
        assertEquals(20, c.schedules(), strategy);
    }

    // The table line keeps the feature word as written, and bad values are refused naming the word.
    @Test
    void noSpaceTimeoutFeatureRoundTripsAndBadValuesAreRefused() throws Exception {
        try (ThinTargetTest.Rig rig = new ThinTargetTest.Rig("thin-nst", 4096, " 2 no_space_timeout=7 skip_block_zeroing")) {
            assertEquals(List.of("0 4096 thin-pool meta data 16 4 2 no_space_timeout=7 skip_block_zeroing"),
                    rig.pool.status(StatusForm.TABLE));
            assertEquals(7 * SECOND, rig.poolRuntime().noSpaceTimeoutNanos());
            for (String bad : List.of("no_space_timeout=", "no_space_timeout=-1", "no_space_timeout=5s", "no_space_timeout=86401")) {
                TableException e = assertThrows(TableException.class,
                        () -> Table.parse(rig.tk.kernel, "p2", "0 4096 thin-pool meta data 16 4 1 " + bad, rig.devices::get));
                assertTrue(e.getMessage().contains(bad), e.getMessage());
            }
        }
        try (ThinTargetTest.Rig rig = new ThinTargetTest.Rig("thin-nst-default", 4096, "")) {
            assertEquals(Pool.NO_SPACE_TIMEOUT_DEFAULT_NANOS, rig.poolRuntime().noSpaceTimeoutNanos());
        }
    }

    // The data written before the pool filled up is intact after the timeout failed the extra write.
    @Test
    void dataWrittenBeforeTheTimeoutIsIntact() {
        SimResult r = runOnce(13, k -> {
            try (SimPool p = new SimPool(k, " 1 no_space_timeout=1")) {
                p.fill();
                require(p.io.write(p.vol, (long) BLOCKS * BLOCK, new byte[4096], 0) == BioStatus.NOSPC, "extra write");
                for (int b = 0; b < BLOCKS; b++) {
                    byte[] back = new byte[4096];
                    require(p.io.read(p.vol, (long) b * BLOCK, back) == BioStatus.OK, "read " + b);
                    assertArrayEquals(ThinTargetTest.pattern(b, 4096), back, "block " + b);
                }
                p.runtime().drain();
                require(p.runtime().check().isEmpty(), "check: " + p.runtime().check());
            } catch (TableException e) {
                throw new IllegalStateException(e);
            }
        });
        assertEquals(Outcome.OK, r.outcome(), r.summary() + "\n" + r.explanation());
    }
}
