package io.blkstack.bio;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotSame;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.block.DataBuffers;
import io.blkstack.block.TestKernel;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Task;
import io.blkstack.mem.Gfp;
import io.blkstack.mem.Page;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;

/** Unit tests of one bio: chaining, completion, split, clone, iterator, references. */
class BioTest {

    /** A bio set for tests: a small reserve, vec arrays, a front pad counting its instances. */
    private static BioSet testSet(Kernel kernel) {
        return new BioSet(kernel, "test", 4, 2, () -> new int[1], false);
    }

    @Test
    void parentCompletesOnlyAfterEveryChainedChild() {
        try (TestKernel tk = new TestKernel("bio-chain")) {
            BioSet set = testSet(tk.kernel);
            AtomicInteger calls = new AtomicInteger();
            Bio parent = set.alloc(Gfp.NOIO, 0).setEndIo(b -> calls.incrementAndGet());
            Bio c1 = set.alloc(Gfp.NOIO, 0);
            Bio c2 = set.alloc(Gfp.NOIO, 0);
            Bio.chain(c1, parent);
            Bio.chain(c2, parent);
            parent.endio();
            assertEquals(0, calls.get(), "parent's own completion with two children outstanding");
            c2.endio();
            assertEquals(0, calls.get(), "one child still outstanding");
            c1.endio();
            assertEquals(1, calls.get());
            assertEquals(1, set.outstanding(), "the chained children were put by the chain");
            parent.put();
        }
    }

    @Test
    void firstErrorOfAChildIsKeptByTheParent() {
        try (TestKernel tk = new TestKernel("bio-status")) {
            BioSet set = testSet(tk.kernel);
            List<BioStatus> seen = new ArrayList<>();
            Bio parent = set.alloc(Gfp.NOIO, 0).setEndIo(b -> seen.add(b.status()));
            Bio c1 = set.alloc(Gfp.NOIO, 0);
            Bio c2 = set.alloc(Gfp.NOIO, 0);
            Bio c3 = set.alloc(Gfp.NOIO, 0);
            Bio.chain(c1, parent);
            Bio.chain(c2, parent);
            Bio.chain(c3, parent);
            c2.endio(); // OK
            c1.setStatus(BioStatus.IOERR);
            c1.endio();
            c3.setStatus(BioStatus.NOSPC);
            c3.endio();
            parent.endio();
            assertEquals(List.of(BioStatus.IOERR), seen);
            parent.put();
        }
    }

    @Test
    void setStatusKeepsTheFirstError() {
        try (TestKernel tk = new TestKernel("bio-first-error")) {
            Bio bio = testSet(tk.kernel).alloc(Gfp.NOIO, 0);
            bio.setStatus(BioStatus.OK);
            bio.setStatus(BioStatus.AGAIN);
            bio.setStatus(BioStatus.IOERR);
            bio.setStatus(BioStatus.OK);
            assertEquals(BioStatus.AGAIN, bio.status());
            bio.put();
        }
    }

    @Test
    void completionWalksAHundredThousandNestedChainsWithoutRecursion() {
        int depth = 100_000;
        try (TestKernel tk = new TestKernel("bio-deep", 64L << 20, io.blkstack.kernel.Policies.defaults(),
                io.blkstack.kernel.Faults.NONE)) {
            BioSet set = new BioSet(tk.kernel, "deep", 2, 0, null, false);
            AtomicInteger calls = new AtomicInteger();
            List<BioStatus> status = new ArrayList<>();
            Bio root = set.alloc(Gfp.NOIO, 0).setEndIo(b -> {
                calls.incrementAndGet();
                status.add(b.status());
            });
            Bio[] chain = new Bio[depth + 1];
            chain[0] = root;
            for (int i = 1; i <= depth; i++) {
                chain[i] = set.alloc(Gfp.NOIO, 0);
                Bio.chain(chain[i], chain[i - 1]);
            }
            for (int i = 0; i < depth; i++) {
                chain[i].endio(); // each parent's own share; its child is still owed
            }
            assertEquals(0, calls.get());
            chain[depth].setStatus(BioStatus.IOERR);
            chain[depth].endio(); // the deepest completion walks all the way up
            assertEquals(1, calls.get());
            assertEquals(List.of(BioStatus.IOERR), status, "the deepest error reached the root");
            assertEquals(1, set.outstanding(), "every chained bio was put on the way up");
            root.put();
        }
    }

    @Test
    void callbackRunsInAtomicContext() {
        try (TestKernel tk = new TestKernel("bio-atomic")) {
            List<Boolean> mayBlock = new ArrayList<>();
            Bio bio = testSet(tk.kernel).alloc(Gfp.NOIO, 0)
                    .setEndIo(b -> mayBlock.add(Task.current().mayBlock()));
            bio.endio();
            assertEquals(List.of(false), mayBlock);
            assertTrue(Task.current().mayBlock(), "atomic context ends with the callback");
            bio.put();
        }
    }

    @Test
    void doublePutThrowsAndIsReported() {
        try (TestKernel tk = new TestKernel("bio-double-put")) {
            Bio bio = testSet(tk.kernel).alloc(Gfp.NOIO, 1);
            bio.put();
            assertThrows(IllegalStateException.class, bio::put);
            assertThrows(IllegalStateException.class, bio::endio, "use after free");
            assertFalse(tk.kernel.misuses().isEmpty());
        }
    }

    @Test
    void getKeepsTheBioUntilTheLastPut() {
        try (TestKernel tk = new TestKernel("bio-refs")) {
            BioSet set = testSet(tk.kernel);
            Bio bio = set.alloc(Gfp.NOIO, 0).get();
            bio.put();
            assertEquals(1, set.outstanding());
            assertEquals(BioState.ALLOCATED, bio.state());
            bio.put();
            assertEquals(0, set.outstanding());
            assertEquals(BioState.FREE, bio.state());
        }
    }

    @Test
    void chainingABioThatHasACallbackThrows() {
        try (TestKernel tk = new TestKernel("bio-chain-misuse")) {
            BioSet set = testSet(tk.kernel);
            Bio parent = set.alloc(Gfp.NOIO, 0);
            Bio child = set.alloc(Gfp.NOIO, 0).setEndIo(b -> { });
            assertThrows(IllegalArgumentException.class, () -> Bio.chain(child, parent));
            Bio chained = set.alloc(Gfp.NOIO, 0);
            Bio.chain(chained, parent);
            assertThrows(IllegalArgumentException.class, () -> Bio.chain(chained, parent), "chained twice");
            assertThrows(IllegalStateException.class, () -> chained.setEndIo(b -> { }));
            chained.endio();
            parent.endio();
            parent.put();
            child.put();
        }
    }

    @Test
    void frontPadIsCreatedOncePerBioObjectAndReused() {
        try (TestKernel tk = new TestKernel("bio-front-pad")) {
            BioSet set = testSet(tk.kernel);
            Bio bio = set.alloc(Gfp.NOIO, 0);
            int[] pad = bio.frontPad();
            pad[0] = 42;
            bio.put();
            Bio again = set.alloc(Gfp.NOIO, 0);
            // The slab hands the most recently freed object back first.
            assertSame(bio, again);
            assertSame(pad, again.frontPad());
            again.put();
        }
    }

    @Test
    void addPageFailsWhenTheVecArrayIsFullAndMergesContiguousSegments() {
        try (TestKernel tk = new TestKernel("bio-add-page")) {
            Kernel k = tk.kernel;
            BioSet set = testSet(k);
            Page p1 = k.pages().alloc(Gfp.KERNEL);
            Page p2 = k.pages().alloc(Gfp.KERNEL);
            Page p3 = k.pages().alloc(Gfp.KERNEL);
            Bio bio = set.alloc(Gfp.NOIO, 2).setOp(BioOp.WRITE);
            assertTrue(bio.addPage(p1, 1024, 0));
            assertTrue(bio.addPage(p1, 1024, 1024), "contiguous in the same page: merged");
            assertEquals(1, bio.vecCount());
            assertTrue(bio.addPage(p2, 512, 512));
            assertFalse(bio.addPage(p3, 512, 0), "two vecs asked for, two used");
            assertEquals(2560, bio.sizeBytes());
            assertEquals(5, bio.sectorCount());
            bio.put();
            k.pages().free(p1);
            k.pages().free(p2);
            k.pages().free(p3);
        }
    }

    @Test
    void splitReturnsANewFrontSharingThePagesAndAdvancesTheOriginal() {
        try (TestKernel tk = new TestKernel("bio-split");
                DataBuffers buffers = new DataBuffers(tk.kernel)) {
            BioSet set = testSet(tk.kernel);
            BioSet splitSet = new BioSet(tk.kernel, "split", 2, 0, null, false);
            byte[] pattern = new byte[8 * Bio.SECTOR_SIZE];
            new java.util.Random(7).nextBytes(pattern);
            Bio bio = buffers.bio(set, null, BioOp.WRITE, 100, pattern.length, new java.util.Random(3));
            bio.copyFrom(pattern, 0);
            Bio front = Bio.split(bio, 3, Gfp.NOIO, splitSet);
            assertNotSame(bio, front);
            assertSame(splitSet, front.pool(), "the new bio is the front");
            assertEquals(100, front.sector());
            assertEquals(3, front.sectorCount());
            assertEquals(103, bio.sector());
            assertEquals(5, bio.sectorCount());
            assertSame(bio.vecs(), front.vecs(), "pages are shared, not copied");
            byte[] got = new byte[pattern.length];
            front.copyTo(got, 0);
            bio.copyTo(got, front.sizeBytes());
            assertArrayEquals(pattern, got);
            front.put();
            bio.put();
        }
    }

    @Test
    void cloneCopiesTheIteratorAndAdvancesIndependently() {
        try (TestKernel tk = new TestKernel("bio-clone");
                DataBuffers buffers = new DataBuffers(tk.kernel)) {
            BioSet set = testSet(tk.kernel);
            byte[] pattern = new byte[16 * Bio.SECTOR_SIZE];
            new java.util.Random(11).nextBytes(pattern);
            Bio bio = buffers.bio(set, null, BioOp.WRITE, 0, pattern.length, new java.util.Random(5));
            bio.copyFrom(pattern, 0);
            bio.advance(3 * Bio.SECTOR_SIZE);
            Bio clone = Bio.clone(bio, Gfp.NOIO, set);
            assertEquals(bio.sector(), clone.sector());
            assertEquals(bio.sizeBytes(), clone.sizeBytes());
            clone.trim(2, 4);
            assertEquals(5, clone.sector());
            assertEquals(4, clone.sectorCount());
            assertEquals(13, bio.sectorCount(), "trimming the clone leaves the source alone");
            byte[] got = new byte[4 * Bio.SECTOR_SIZE];
            clone.copyTo(got, 0);
            assertArrayEquals(java.util.Arrays.copyOfRange(pattern, 5 * 512, 9 * 512), got);
            BioIter iter = new BioIter();
            int total = 0;
            for (iter.reset(clone); iter.next(); ) {
                assertEquals(total, iter.bioOffset());
                total += iter.length();
            }
            assertEquals(clone.sizeBytes(), total);
            clone.put();
            bio.put();
        }
    }
}
