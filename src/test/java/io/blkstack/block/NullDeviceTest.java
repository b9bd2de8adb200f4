package io.blkstack.block;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioSet;
import io.blkstack.bio.BioStatus;
import io.blkstack.kernel.Completion;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Policies;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.TaskKind;
import io.blkstack.mem.Gfp;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/** The null device: reads are zeros, everything succeeds, at once or after a timer's latency. */
class NullDeviceTest {

    private Kernel kernel;
    private TestKernel tk;
    private BioSet set;

    @BeforeEach
    void setUp() {
        tk = new TestKernel("null-test", 4L << 20, Policies.defaults(), Faults.NONE);
        kernel = tk.kernel;
        set = new BioSet(kernel, "test", 4, 4, null, false);
    }

    @AfterEach
    void tearDown() {
        tk.close();
    }

    @Test
    void readsAreZerosAndEveryOperationSucceeds() {
        NullDevice dev = new NullDevice(kernel, "n", 1L << 20, 0);
        assertEquals(BioStatus.OK, BioBytes.write(set, dev, 4096, MemoryDeviceTest.filled(8192, (byte) 3), 0, 0));
        assertArrayEquals(new byte[8192], BioBytes.readOk(set, dev, 4096, 8192, 512));
        for (BioOp op : new BioOp[] {BioOp.FLUSH, BioOp.DISCARD, BioOp.WRITE_ZEROES}) {
            assertEquals(BioStatus.OK, BioBytes.range(set, dev, op, 0, op == BioOp.FLUSH ? 0 : 65536, 0), op.name());
        }
    }

    @Test
    void withoutLatencyTheSubmitterCompletesTheBio() {
        NullDevice dev = new NullDevice(kernel, "n", 1L << 20, 0);
        assertSame(Task.current(), completingTask(dev));
    }

    @Test
    void latencyIsMeasuredOnTheKernelClockAndCompletionComesFromATimer() {
        long latency = 20_000_000L;
        NullDevice dev = new NullDevice(kernel, "n", 1L << 20, latency);
        long t0 = kernel.scheduler().nanoTime();
        assertArrayEquals(new byte[4096], BioBytes.readOk(set, dev, 0, 4096, 0));
        long elapsed = kernel.scheduler().nanoTime() - t0;
        assertTrue(elapsed >= latency, "completed after " + elapsed + " ns, latency is " + latency + " ns");
        assertEquals(TaskKind.TIMER, completingTask(dev).kind());
        dev.close();
        assertEquals(0, dev.inFlight());
    }

    @Test
    void closeWaitsForBiosAwaitingTheirTimers() {
        NullDevice dev = new NullDevice(kernel, "n", 1L << 20, 10_000_000L);
        Completion callbacks = new Completion("callbacks");
        Bio[] bios = new Bio[3];
        for (int i = 0; i < bios.length; i++) {
            bios[i] = set.alloc(Gfp.KERNEL, 0);
            bios[i].init(dev, BioOp.FLUSH, 0, 0);
            bios[i].setEndIo(b -> callbacks.complete());
            Submit.submitBio(bios[i]);
        }
        dev.close();
        assertEquals(0, dev.inFlight());
        for (Bio bio : bios) {
            // Every completion already ran: these do not wait.
            assertTrue(callbacks.await(0), "a bio was still in flight after close");
            bio.put();
        }
    }

    /** Submits a flush and returns the task its completion callback ran on. */
    private Task completingTask(NullDevice dev) {
        AtomicReference<Task> ran = new AtomicReference<>();
        Completion done = new Completion("flush");
        Bio bio = set.alloc(Gfp.KERNEL, 0);
        bio.init(dev, BioOp.FLUSH, 0, 0);
        bio.setEndIo(b -> {
            ran.set(Task.currentOrNull());
            done.complete();
        });
        Submit.submitBio(bio);
        done.await();
        bio.put();
        return ran.get();
    }
}
