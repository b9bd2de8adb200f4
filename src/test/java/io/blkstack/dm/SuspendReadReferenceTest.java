package io.blkstack.dm;

import static org.junit.jupiter.api.Assertions.*;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioStatus;
import io.blkstack.bio.ReadReference;
import io.blkstack.block.FileDevice;
import io.blkstack.block.Submit;
import io.blkstack.block.TestKernel;
import io.blkstack.kernel.Completion;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Policies;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.TaskKind;
import io.blkstack.mem.Gfp;
import io.blkstack.mem.Page;
import java.nio.file.Path;
import java.util.Random;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.function.BooleanSupplier;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A READ by reference that crosses a target boundary is mapped front first; the front part is
 * held at the file (in flight on the device) until the whole READ is sent, and the remainder goes
 * back to the submit loop. A suspend that starts in between waits for the held front part, so
 * the remainder, arriving at the suspended device, must not be held there behind it: proves it
 * refuses the offer instead (the front part is read into its page and completes), the suspend
 * succeeds, and after resume the READ completes from pages with the file's data.
 */
class SuspendReadReferenceTest {

    private static final long WAIT_NANOS = 60_000_000_000L;
    private static final long SUSPEND_NANOS = 20_000_000_000L;

    @TempDir
    Path dir;

    @Test
    void aReadPartArrivingAtASuspendedDeviceRefusesTheOfferSoTheSuspendEnds() throws Exception {
        try (TestKernel tk = new TestKernel("suspend-reference", 32L << 20, Policies.defaults(), Faults.NONE);
                TargetBench b = new TargetBench(tk.kernel)) {
            FileDevice f = b.add("f", FileDevice.open(tk.kernel, "f", dir.resolve("f.img"), 1L << 20,
                    FileDevice.Options.defaults().withCreate(true)));
            byte[] data = new byte[2 * Page.SIZE];
            new Random(11).nextBytes(data);
            assertEquals(BioStatus.OK, b.write(f, 0, data, 0));
            // Two targets, so the 2-page READ at sector 0 is cut at sector 8.
            MappedDevice md = b.mapped("0 8 linear f 0\n8 8 linear f 8\n");
            assertTrue(md.readsByReference());

            Bio top = b.client.alloc(Gfp.NOIO, 2);
            Page[] pages = {tk.kernel.pages().alloc(Gfp.NOIO), tk.kernel.pages().alloc(Gfp.NOIO)};
            top.addPage(pages[0], Page.SIZE, 0);
            top.addPage(pages[1], Page.SIZE, 0);
            ReadReference reference = new ReadReference();
            Completion done = new Completion("read");
            top.init(md, BioOp.READ, 0, 0).setEndIo(x -> done.complete());
            reference.arm(top, r -> { }, null);
            // The front part, as the device's own split makes it; the remainder stays in top.
            Bio front = Bio.split(top, Page.SIZE >>> Bio.SECTOR_SHIFT, Gfp.NOIO, b.client);
            Bio.chain(front, top);
            Submit.submitBio(front);
            awaitTrue(() -> reference.extentCount() == 1, "the front part held at the file");
            assertEquals(1, md.inFlight());

            AtomicBoolean suspended = new AtomicBoolean();
            Completion suspendReturned = new Completion("suspend returned");
            Task suspender = tk.kernel.spawn("suspender", TaskKind.USER, () -> {
                suspended.set(md.suspend(SUSPEND_NANOS));
                suspendReturned.complete();
            });
            assertNotNull(suspender.awaitWait(what -> String.valueOf(what).startsWith("suspend of dm"), WAIT_NANOS),
                    "the suspend never waited for the held front part: " + md.describeState());
            Submit.submitBio(top); // the remainder reaches the suspended device
            assertTrue(suspendReturned.await(WAIT_NANOS), "the suspend waits for the held front part: " + md.describeState());
            assertTrue(suspended.get(), "the suspend gave up: " + md.describeState());
            assertNull(top.readReference(), "the remainder refused the offer");
            assertEquals(0, reference.extentCount(), "the held front part completed");
            assertFalse(done.isDone(), "the remainder is held by the suspended device");

            md.resume();
            assertTrue(done.await(WAIT_NANOS), "the READ completes after resume");
            assertEquals(BioStatus.OK, top.status());
            byte[] got = new byte[2 * Page.SIZE];
            pages[0].buffer().get(0, got, 0, Page.SIZE);
            pages[1].buffer().get(0, got, Page.SIZE, Page.SIZE);
            assertArrayEquals(data, got, "the READ completed from pages with the file's data");
            top.put();
            for (Page p : pages) {
                tk.kernel.pages().free(p);
            }
        }
    }

    /** Waits at most {@link #WAIT_NANOS} for a state a device's I/O task reaches (it announces no wait). */
    private static void awaitTrue(BooleanSupplier condition, String what) {
        long deadline = System.nanoTime() + WAIT_NANOS;
        while (!condition.getAsBoolean()) {
            if (System.nanoTime() > deadline) {
                fail("never reached: " + what);
            }
            Thread.onSpinWait();
        }
    }
}
