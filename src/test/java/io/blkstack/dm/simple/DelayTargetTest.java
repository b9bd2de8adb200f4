package io.blkstack.dm.simple;

import io.blkstack.dm.TargetBench;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.Submit;
import io.blkstack.block.TestKernel;
import io.blkstack.dm.MappedDevice;
import io.blkstack.dm.StatusForm;
import io.blkstack.dm.TableException;
import io.blkstack.kernel.Completion;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Policies;
import io.blkstack.mem.Gfp;
import io.blkstack.sim.Outcome;
import io.blkstack.sim.SimConfig;
import io.blkstack.sim.SimResult;
import io.blkstack.sim.SimRunner;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.Test;

/** dm-delay: table forms, per-class devices and delays on virtual time, suspend releases held bios. */
class DelayTargetTest {

    private static final long MS = 1_000_000L;

    private static TestKernel kernel(String name) {
        return new TestKernel(name, 32L << 20, Policies.defaults(), Faults.NONE);
    }

    @Test
    void tableFormsRoundTripThroughStatusTable() throws TableException {
        try (TestKernel tk = kernel("delay-table"); TargetBench b = new TargetBench(tk.kernel)) {
            b.bottom("a", 1024);
            b.bottom("b", 1024);
            b.bottom("c", 1024);
            for (String line : List.of("0 512 delay a 0 500", "0 512 delay a 2048 0 b 16 400",
                    "0 512 delay a 0 50 b 0 100 c 3 333")) {
                line = line.replace("2048", "100");
                try (var t = b.table(line + "\n")) {
                    assertEquals(List.of(line), t.lines());
                    assertEquals("0 0 0", t.target(0).statusInfo());
                }
            }
        }
    }

    @Test
    void badTablesNameTheArgument() {
        try (TestKernel tk = kernel("delay-bad"); TargetBench b = new TargetBench(tk.kernel)) {
            b.bottom("a", 1024);
            TableException count = assertThrows(TableException.class, () -> b.table("0 512 delay a 0 5 a 0\n"));
            assertTrue(count.getMessage().contains("3, 6 or 9"), count.getMessage());
            TableException delay = assertThrows(TableException.class, () -> b.table("0 512 delay a 0 soon\n"));
            assertTrue(delay.getMessage().contains("soon"), delay.getMessage());
            TableException area = assertThrows(TableException.class, () -> b.table("0 512 delay a 0 1 a 600 1\n"));
            assertTrue(area.getMessage().contains("600"), area.getMessage());
            TableException dev = assertThrows(TableException.class, () -> b.table("0 512 delay a 0 1 a 0 1 x 0 1\n"));
            assertTrue(dev.getMessage().contains("'x'"), dev.getMessage());
        }
    }

    // Proves each class goes to its own device and offset and is held for its own delay, on the
    // simulated scheduler's virtual clock (so no real waiting and no timing noise): a read (300 ms,
    // device a), a write (100 ms, device b) and a flush (200 ms, device c) are submitted at the
    // same instant; they must reach the bottoms in the order write, flush, read, each no earlier
    // than its delay, and the write's data must land at b's offset.
    @Test
    void eachClassIsHeldForItsDelayAndGoesToItsDevice() {
        SimRunner runner = new SimRunner(SimConfig.builder().memory(16L << 20).build());
        for (long seed = 1; seed <= 3; seed++) {
            SimResult r = runner.runOnce(seed, k -> {
                try (TargetBench b = new TargetBench(k)) {
                    TargetBench.Bottom a = b.bottom("a", 256);
                    TargetBench.Bottom bd = b.bottom("b", 256);
                    TargetBench.Bottom c = b.bottom("c", 256);
                    MappedDevice md;
                    try {
                        md = b.mapped("0 128 delay a 8 300 b 16 100 c 24 200\n");
                    } catch (TableException e) {
                        throw new IllegalStateException(e);
                    }
                    byte[] data = new byte[4 * Bio.SECTOR_SIZE];
                    new Random(5).nextBytes(data);
                    long t0 = k.scheduler().nanoTime();
                    Completion done = new Completion("three bios");
                    int[] left = {3};
                    Bio read = b.buffers.bio(b.client, md, BioOp.READ, 2, 512, null);
                    Bio write = b.writeBio(md, 3, data, 0);
                    Bio flush = b.client.alloc(Gfp.NOIO, 0);
                    flush.init(md, BioOp.FLUSH, 0, 0);
                    for (Bio bio : new Bio[] {read, write, flush}) {
                        bio.setEndIo(x -> {
                            if (--left[0] == 0) {
                                done.complete();
                            }
                        });
                        Submit.submitBio(bio);
                    }
                    require(md.status(StatusForm.INFO).equals(List.of("0 128 delay 1 1 1")),
                            "held per class: " + md.status(StatusForm.INFO));
                    done.await();
                    List<String> log = b.logSnapshot();
                    require(log.equals(List.of("b:WRITE:19+4", "c:FLUSH:0+0", "a:READ:10+1")), "order " + log);
                    require(bd.times.get(0) - t0 >= 100 * MS, "write went after " + (bd.times.get(0) - t0));
                    require(c.times.get(0) - t0 >= 200 * MS, "flush went after " + (c.times.get(0) - t0));
                    require(a.times.get(0) - t0 >= 300 * MS, "read went after " + (a.times.get(0) - t0));
                    require(a.times.get(0) - t0 < 400 * MS, "read held too long: " + (a.times.get(0) - t0));
                    byte[] landed = java.util.Arrays.copyOfRange(bd.data, 19 * 512, 23 * 512);
                    require(java.util.Arrays.equals(data, landed), "write data at b:19");
                    require(read.status() == BioStatus.OK && write.status() == BioStatus.OK
                            && flush.status() == BioStatus.OK, "statuses");
                    require(md.status(StatusForm.INFO).equals(List.of("0 128 delay 0 0 0")), "nothing held at the end");
                    read.put();
                    write.put();
                    flush.put();
                }
            });
            assertEquals(Outcome.OK, r.outcome(), r.explanation());
        }
    }

    private static void require(boolean condition, String what) {
        if (!condition) {
            throw new IllegalStateException(what);
        }
    }

    @Test
    void suspendReleasesHeldBiosAndResumeDelaysAgain() throws TableException {
        try (TestKernel tk = kernel("delay-suspend"); TargetBench b = new TargetBench(tk.kernel)) {
            TargetBench.Bottom a = b.bottom("a", 256);
            // One hour: only the suspend can release it.
            MappedDevice md = b.mapped("0 128 delay a 0 0 a 0 3600000\n");
            byte[] data = new byte[1024];
            new Random(2).nextBytes(data);
            Bio write = b.writeBio(md, 7, data, 0);
            Completion done = new Completion("held write");
            write.setEndIo(x -> done.complete());
            Submit.submitBio(write);
            assertEquals(List.of("0 128 delay 0 1 0"), md.status(StatusForm.INFO));
            assertTrue(b.logSnapshot().isEmpty(), b.logSnapshot().toString());
            md.suspend();
            assertTrue(done.isDone(), "suspend returned with the write still held");
            assertEquals(BioStatus.OK, write.status());
            assertEquals(List.of("a:WRITE:7+2"), b.logSnapshot());
            assertArrayEquals(data, java.util.Arrays.copyOfRange(a.data, 7 * 512, 9 * 512));
            assertEquals(List.of("0 128 delay 0 0 0"), md.status(StatusForm.INFO));
            write.put();
            md.resume();
            // Reads have no delay in this table and go straight through; writes are held again.
            byte[] back = new byte[1024];
            assertEquals(BioStatus.OK, b.read(md, 7, back));
            Bio again = b.writeBio(md, 0, data, 0);
            Completion done2 = new Completion("held again");
            again.setEndIo(x -> done2.complete());
            Submit.submitBio(again);
            assertEquals(List.of("0 128 delay 0 1 0"), md.status(StatusForm.INFO));
            md.suspend();
            assertTrue(done2.isDone());
            again.put();
            md.resume();
        }
    }
}
