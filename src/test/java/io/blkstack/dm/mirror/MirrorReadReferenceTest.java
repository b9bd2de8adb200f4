package io.blkstack.dm.mirror;

import static org.junit.jupiter.api.Assertions.*;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioStatus;
import io.blkstack.bio.ReadReference;
import io.blkstack.block.FileDevice;
import io.blkstack.block.Submit;
import io.blkstack.block.TestKernel;
import io.blkstack.dm.MappedDevice;
import io.blkstack.dm.TargetBench;
import io.blkstack.kernel.Completion;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Policies;
import io.blkstack.mem.Gfp;
import io.blkstack.mem.Page;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.Random;
import java.util.concurrent.atomic.AtomicBoolean;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Mirror passes READs by reference and keeps its read retry: a READ offered by reference whose
 * first leg fails is retried on the other leg and held there, so it is still sent by reference
 * with the data the mirror holds, and completes only when the reference is released.
 */
class MirrorReadReferenceTest {

    private static final long WAIT_NANOS = 60_000_000_000L;

    @TempDir
    Path dir;

    /** Fails the next I/O of file device {@code a} once armed. */
    private static final class FailLegAOnce implements Faults {
        final AtomicBoolean armed = new AtomicBoolean();

        @Override
        public boolean shouldFail(String site) {
            return site.equals("io:a") && armed.compareAndSet(true, false);
        }

        @Override
        public long extraLatencyNanos(String site) {
            return 0;
        }
    }

    @Test
    void aReadWhoseLegFailsIsRetriedAndStillSentByReference() throws Exception {
        FailLegAOnce faults = new FailLegAOnce();
        try (TestKernel tk = new TestKernel("mirror-reference", 32L << 20, Policies.defaults(), faults);
                TargetBench b = new TargetBench(tk.kernel)) {
            FileDevice.Options options = FileDevice.Options.defaults().withCreate(true);
            for (String leg : new String[] {"a", "b"}) {
                b.add(leg, FileDevice.open(tk.kernel, leg, dir.resolve(leg + ".img"), 1L << 20, options));
            }
            MappedDevice md = b.mapped("0 2048 mirror core 1 64 2 a 0 b 0\n");
            assertTrue(md.readsByReference(), "mirror over buffered files passes references");
            byte[] data = new byte[2 * Page.SIZE];
            new Random(5).nextBytes(data);
            assertEquals(BioStatus.OK, b.write(md, 16, data, 0));

            Bio top = b.client.alloc(Gfp.NOIO, 2);
            Page[] pages = {tk.kernel.pages().alloc(Gfp.NOIO), tk.kernel.pages().alloc(Gfp.NOIO)};
            top.addPage(pages[0], Page.SIZE, 0);
            top.addPage(pages[1], Page.SIZE, 0);
            ReadReference reference = new ReadReference();
            Completion ready = new Completion("references ready");
            Completion done = new Completion("read");
            top.init(md, BioOp.READ, 0, 16).setEndIo(x -> done.complete());
            reference.arm(top, r -> ready.complete(), null);
            faults.armed.set(true);
            Submit.submitBio(top);

            assertTrue(ready.await(WAIT_NANOS), "the READ was never held by reference: " + reference + "; " + md.describeState());
            MirrorTarget mirror = (MirrorTarget) md.table().target(0);
            assertEquals(1, mirror.readRetries(), "the failed leg's READ was retried");
            assertFalse(mirror.isLegHealthy(0), "leg a failed");
            assertFalse(done.isDone(), "the READ completed before its reference was released");
            assertEquals(BioStatus.OK, top.status());
            ByteBuffer sent = ByteBuffer.allocate(data.length);
            for (int i = 0; i < reference.extentCount(); i++) {
                ByteBuffer part = sent.slice(sent.position(), reference.length(i));
                while (part.hasRemaining()) {
                    assertTrue(reference.channel(i).read(part, reference.position(i) + part.position()) > 0);
                }
                sent.position(sent.position() + reference.length(i));
            }
            assertArrayEquals(data, sent.array(), "the referenced extents hold what was written");

            reference.release(BioStatus.OK);
            assertTrue(done.isDone());
            assertEquals(BioStatus.OK, top.status());
            top.put();
            for (Page p : pages) {
                tk.kernel.pages().free(p);
            }
            md.close();
        }
    }
}
