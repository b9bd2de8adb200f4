package io.blkstack.block;

import static org.junit.jupiter.api.Assertions.*;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioSet;
import io.blkstack.bio.BioStatus;
import io.blkstack.bio.ReadReference;
import io.blkstack.kernel.Completion;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.TaskKind;
import io.blkstack.mem.Gfp;
import io.blkstack.mem.Page;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * References never outlive the file (issue 16): a READ held by reference is sent from the file
 * device's channel after the device "served" it, so closing the device must wait until the hold
 * ended. Proves the close waits (observed: the closing task waits on the device) with the channel
 * still open, and finishes, closing the channel, once the reference is released.
 */
class FileDeviceCloseReferenceTest {

    private static final long WAIT_NANOS = 60_000_000_000L;

    @TempDir
    Path dir;

    @Test
    void closingTheDeviceWaitsForAReadHeldByReference() throws Exception {
        try (TestKernel tk = new TestKernel("file-close-reference")) {
            FileDevice f = FileDevice.open(tk.kernel, "f", dir.resolve("f.img"), 1L << 20,
                    FileDevice.Options.defaults().withCreate(true));
            BioSet set = new BioSet(tk.kernel, "test", 2, 2, null, false);
            Bio bio = set.alloc(Gfp.NOIO, 1);
            Page page = tk.kernel.pages().alloc(Gfp.NOIO);
            bio.addPage(page, Page.SIZE, 0);
            ReadReference reference = new ReadReference();
            Completion ready = new Completion("references ready");
            Completion done = new Completion("read");
            bio.init(f, BioOp.READ, 0, 8).setEndIo(b -> done.complete());
            reference.arm(bio, r -> ready.complete(), null);
            Submit.submitBio(bio);
            assertTrue(ready.await(WAIT_NANOS), "the READ was never held by reference: " + f.describeState());
            FileChannel channel = reference.channel(0);

            Completion closed = new Completion("device closed");
            Task closer = tk.kernel.spawn("closer", TaskKind.USER, () -> {
                f.close();
                closed.complete();
            });
            assertSame(f, closer.awaitWait(what -> what == f, WAIT_NANOS),
                    "the close did not wait for the READ held by reference: " + f.describeState());
            assertTrue(channel.isOpen(), "the file was closed under a READ held by reference");
            assertFalse(done.isDone());

            reference.release(BioStatus.OK);
            assertTrue(closed.await(WAIT_NANOS), "the close did not end after the release: " + f.describeState());
            assertTrue(done.isDone());
            assertEquals(BioStatus.OK, bio.status());
            assertFalse(channel.isOpen(), "the close closed the channel after the release");
            bio.put();
            tk.kernel.pages().free(page);
            set.close();
        }
    }
}
