package io.blkstack.dm.thin;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.bio.BioSet;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.MemoryDevice;
import io.blkstack.dm.MappedDevice;
import io.blkstack.dm.Table;
import io.blkstack.dm.TableException;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.TaskKind;
import io.blkstack.sim.SimConfig;
import io.blkstack.sim.SimRunner;
import java.util.Arrays;
import java.util.HashMap;
import java.util.Map;
import java.util.function.Consumer;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * A thin block is not reused while a READ of it is in flight (issue 16, "Thin"): one volume's READ
 * of its only block, a discard of that block with a commit, and a write to a second volume that
 * needs a block (the pool has exactly one), interleaved by the simulator. The data device takes a
 * READ's data when the READ completes ({@link MemoryDevice#setReadsAtCompletion}), which is what a
 * READ held by reference does (its payload leaves the file at the send, and it completes after),
 * with random extra latency so that the READ can outlast the discard, the commit and the write.
 * The READ must return the volume's data or zeros (if it came after the discard), never the other
 * volume's. Before the pool counted its I/O in flight ({@link DeferredSet}) the freed block went
 * back to the allocator at the commit, and this failed within a few dozen schedules.
 */
class ThinReuseUnderReadTest {

    static final int BLOCK = 16; // sectors
    static final int BLOCK_BYTES = BLOCK * 512;

    /** Schedules per strategy: 10,000 with -Dblkstack.thinReuseSchedules=10000 (the run); fewer in CI. */
    static final int SCHEDULES = Integer.getInteger("blkstack.thinReuseSchedules", 400);

    @ParameterizedTest
    @ValueSource(strings = {"random", "pct:3"})
    void aBlockIsNotReusedWhileAReadOfItIsInFlight(String strategy) {
        SimRunner runner = new SimRunner(SimConfig.builder().memory(4L << 20).strategy(strategy)
                .faults("latency:data=0.5/2ms").build());
        SimRunner.CampaignResult c = runner.campaign(16, SCHEDULES, true, false, discardAndReuseUnderRead());
        assertTrue(c.findings().isEmpty(), strategy + ": " + (c.firstFinding() == null ? "" : c.firstFinding().explanation()));
        assertEquals(SCHEDULES, c.schedules());
        System.out.printf("thin reuse under read, %s: %d schedules, %d findings, %.1f s%n", strategy, c.schedules(),
                c.findings().size(), c.elapsedNanos() / 1e9);
        assertTrue(c.faultFires().getOrDefault("latency:data", 0L) > 0, "no READ was delayed: " + c.faultFires());
    }

    static byte[] fill(int value) {
        byte[] b = new byte[BLOCK_BYTES];
        Arrays.fill(b, (byte) value);
        return b;
    }

    /** The workload; a violated expectation throws, which the checker reports as a crash. */
    static Consumer<Kernel> discardAndReuseUnderRead() {
        return k -> {
            Map<String, io.blkstack.block.BlockDevice> devices = new HashMap<>();
            MemoryDevice meta = new MemoryDevice(k, "meta", 1L << 20, 50_000);
            MemoryDevice data = new MemoryDevice(k, "data", BLOCK_BYTES, 50_000);
            data.setReadsAtCompletion(true);
            devices.put("meta", meta);
            devices.put("data", data);
            BioSet set = new BioSet(k, "client", 4, 4, null, false);
            ThinIo io = new ThinIo(k, set);
            MappedDevice pool = map(k, devices, "pool", "0 " + BLOCK + " thin-pool meta data " + BLOCK + " 0");
            pool.message(0, "create_thin", "1");
            pool.message(0, "create_thin", "2");
            MappedDevice a = map(k, devices, "a", "0 " + BLOCK + " thin pool 1");
            MappedDevice b = map(k, devices, "b", "0 " + BLOCK + " thin pool 2");
            byte[] ofA = fill(0xaa);
            byte[] ofB = fill(0xbb);
            expect(io.write(a, 0, ofA, 0), "the first write to a");
            expect(io.flush(a), "the flush after it");

            byte[] got = new byte[BLOCK_BYTES];
            Task reader = k.spawn("reader", TaskKind.USER, () -> expect(io.read(a, 0, got), "the read of a"));
            Task discarder = k.spawn("discarder", TaskKind.USER, () -> {
                expect(io.discard(a, 0, BLOCK), "the discard of a");
                expect(io.flush(a), "the flush after the discard");
            });
            Task writer = k.spawn("writer", TaskKind.USER, () -> expect(io.write(b, 0, ofB, 0), "the write to b"));
            k.scheduler().join(reader);
            k.scheduler().join(discarder);
            k.scheduler().join(writer);
            if (!Arrays.equals(got, ofA) && !Arrays.equals(got, new byte[BLOCK_BYTES])) {
                throw new IllegalStateException("the read of a returned " + (got[0] == ofB[0] ? "b's data" : "other data")
                        + " (first byte " + (got[0] & 0xff) + ")");
            }
            byte[] back = new byte[BLOCK_BYTES];
            expect(io.read(b, 0, back), "the read of b");
            if (!Arrays.equals(back, ofB)) {
                throw new IllegalStateException("b reads back first byte " + (back[0] & 0xff) + ", not its data");
            }
            b.close();
            a.close();
            pool.close();
            set.close();
            data.close();
            meta.close();
        };
    }

    private static MappedDevice map(Kernel k, Map<String, io.blkstack.block.BlockDevice> devices, String name, String line) {
        try {
            MappedDevice md = new MappedDevice(k, name, Table.parse(k, name, line, devices::get));
            devices.put(name, md);
            return md;
        } catch (TableException e) {
            throw new IllegalStateException(e);
        }
    }

    private static void expect(BioStatus status, String what) {
        if (status != BioStatus.OK) {
            throw new IllegalStateException(what + " ended " + status);
        }
    }
}
