package io.blkstack.dm;

import static org.junit.jupiter.api.Assertions.*;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.HoldingDevice;
import io.blkstack.block.Submit;
import io.blkstack.block.TestKernel;
import io.blkstack.kernel.Completion;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Policies;
import org.junit.jupiter.api.Test;

/**
 * A bounded suspend ({@link MappedDevice#suspend(long)}) of a device with I/O that does not
 * finish: it gives up after its timeout, returns false and leaves the device running (a new write
 * maps straight through instead of being held); once the I/O finishes, a suspend succeeds and
 * resume lets I/O flow again. Proves the control plane's suspend can never wait for ever.
 */
class MappedDeviceSuspendTimeoutTest {

    @Test
    void aSuspendThatTimesOutLeavesTheDeviceRunning() throws TableException {
        try (TestKernel tk = new TestKernel("suspend-timeout", 32L << 20, Policies.defaults(), Faults.NONE);
                TargetBench b = new TargetBench(tk.kernel)) {
            HoldingDevice h = b.add("h", new HoldingDevice(tk.kernel, "held", 256, true));
            MappedDevice md = b.mapped("0 128 linear h 0\n");
            Bio first = b.writeBio(md, 0, new byte[4096], 0);
            Completion firstDone = new Completion("first write");
            first.setEndIo(x -> firstDone.complete());
            Submit.submitBio(first);
            assertEquals(1, h.heldCount());
            assertEquals(1, md.inFlight());

            assertFalse(md.suspend(50_000_000L), "the write in flight cannot finish");
            assertFalse(md.isSuspended(), "a failed suspend leaves the device running");
            Bio second = b.writeBio(md, 8, new byte[4096], 0);
            Completion secondDone = new Completion("second write");
            second.setEndIo(x -> secondDone.complete());
            Submit.submitBio(second);
            assertEquals(2, h.heldCount(), "a new write maps through at once, it is not held");
            assertEquals(0, md.heldCount());

            h.releaseAll();
            assertTrue(firstDone.isDone() && secondDone.isDone());
            assertEquals(BioStatus.OK, first.status());
            assertEquals(BioStatus.OK, second.status());
            first.put();
            second.put();
            assertTrue(md.suspend(1_000_000_000L), "nothing in flight: the suspend succeeds");
            assertTrue(md.isSuspended());
            md.resume();
            Bio third = b.writeBio(md, 16, new byte[4096], 0);
            Completion thirdDone = new Completion("third write");
            third.setEndIo(x -> thirdDone.complete());
            Submit.submitBio(third);
            assertEquals(1, h.heldCount(), "after resume writes map through again");
            h.releaseAll();
            assertTrue(thirdDone.isDone());
            third.put();
        }
    }
}
