package io.blkstack.bio;

import static org.junit.jupiter.api.Assertions.*;

import io.blkstack.block.TestKernel;
import io.blkstack.kernel.Completion;
import io.blkstack.kernel.TaskKind;
import io.blkstack.mem.Gfp;
import io.blkstack.mem.Page;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The mechanism of reads by reference without a device stack: a READ of two pages is split in
 * two; each part is held as an extent of a file. Proves: the owner is told only when every byte
 * is held, with the extents in payload order; held parts complete only on release; a refusal
 * after a part was held reads that part into its pages (so the READ completes from pages, never
 * mixed); a part that fails aborts the offer and completes the held parts with an error; a part
 * that would wait for a bio refuses first, so a held part never keeps the bio it waits for.
 */
class ReadReferenceTest {

    @TempDir
    Path dir;

    /** A file of two pages of a pattern; returns the pattern. */
    private byte[] file(Path path) throws Exception {
        byte[] data = new byte[2 * Page.SIZE];
        new Random(7).nextBytes(data);
        try (FileChannel ch = FileChannel.open(path, StandardOpenOption.CREATE, StandardOpenOption.WRITE)) {
            ch.write(ByteBuffer.wrap(data), 0);
        }
        return data;
    }

    private record Setup(BioSet set, Bio top, Page[] pages, List<Bio> completed) {
    }

    private static Setup twoPageRead(TestKernel tk) {
        BioSet set = new BioSet(tk.kernel, "test", 4, 2, null, false);
        Bio top = set.alloc(Gfp.NOIO, 2);
        Page[] pages = {tk.kernel.pages().alloc(Gfp.NOIO), tk.kernel.pages().alloc(Gfp.NOIO)};
        top.addPage(pages[0], Page.SIZE, 0);
        top.addPage(pages[1], Page.SIZE, 0);
        List<Bio> completed = new ArrayList<>();
        top.setEndIo(completed::add);
        return new Setup(set, top, pages, completed);
    }

    private static void free(TestKernel tk, Setup s) {
        s.top().put();
        for (Page p : s.pages()) {
            tk.kernel.pages().free(p);
        }
        s.set().close();
    }

    @Test
    void theOwnerIsToldOnlyWhenEveryByteIsHeldAndPartsCompleteOnRelease() throws Exception {
        Path path = dir.resolve("f");
        file(path);
        try (TestKernel tk = new TestKernel("read-reference");
                FileChannel ch = FileChannel.open(path, StandardOpenOption.READ)) {
            Setup s = twoPageRead(tk);
            ReadReference ref = new ReadReference();
            int[] told = new int[1];
            ref.arm(s.top(), r -> told[0]++, null);
            Bio front = Bio.split(s.top(), Page.SIZE >>> Bio.SECTOR_SHIFT, Gfp.NOIO, s.set());
            Bio.chain(front, s.top());
            assertSame(ref, front.readReference(), "a split inherits the offer");
            assertTrue(ref.tryHold(s.top(), ch, 100_000), "the back part (remainder) held first");
            assertEquals(0, told[0], "told before every byte was held");
            assertTrue(ref.tryHold(front, ch, 0));
            assertEquals(1, told[0]);
            assertTrue(ref.isReady());
            assertEquals(2, ref.extentCount());
            assertEquals(0, ref.position(0), "extents in payload order");
            assertEquals(100_000, ref.position(1));
            assertTrue(s.completed().isEmpty(), "the READ completed before its references were released");
            ref.release(BioStatus.OK);
            assertEquals(List.of(s.top()), s.completed());
            assertEquals(BioStatus.OK, s.top().status());
            free(tk, s);
        }
    }

    @Test
    void aRefusalAfterAHoldReadsTheHeldPartIntoItsPages() throws Exception {
        Path path = dir.resolve("f");
        byte[] data = file(path);
        try (TestKernel tk = new TestKernel("read-reference");
                FileChannel ch = FileChannel.open(path, StandardOpenOption.READ)) {
            Setup s = twoPageRead(tk);
            ReadReference ref = new ReadReference();
            int[] told = new int[1];
            ref.arm(s.top(), r -> told[0]++, null);
            Bio front = Bio.split(s.top(), Page.SIZE >>> Bio.SECTOR_SHIFT, Gfp.NOIO, s.set());
            Bio.chain(front, s.top());
            assertTrue(ref.tryHold(front, ch, 0));
            s.top().refuseReadReference(); // e.g. crypt under the back part
            assertNull(s.top().readReference());
            assertFalse(ref.tryHold(s.top(), ch, Page.SIZE), "a refused READ takes no more references");
            s.top().copyFrom(java.util.Arrays.copyOfRange(data, Page.SIZE, 2 * Page.SIZE), 0); // the back part's pages filled
            s.top().endio();
            assertEquals(List.of(s.top()), s.completed(), "the READ completes from pages");
            assertEquals(0, told[0]);
            byte[] got = new byte[2 * Page.SIZE];
            s.pages()[0].buffer().get(0, got, 0, Page.SIZE);
            s.pages()[1].buffer().get(0, got, Page.SIZE, Page.SIZE);
            assertArrayEquals(data, got, "the held part was read into its page on refusal");
            free(tk, s);
        }
    }

    @Test
    void aFailedPartAbortsAndCompletesTheHeldPartsWithAnError() throws Exception {
        Path path = dir.resolve("f");
        file(path);
        try (TestKernel tk = new TestKernel("read-reference");
                FileChannel ch = FileChannel.open(path, StandardOpenOption.READ)) {
            Setup s = twoPageRead(tk);
            ReadReference ref = new ReadReference();
            int[] told = new int[1];
            ref.arm(s.top(), r -> told[0]++, null);
            Bio front = Bio.split(s.top(), Page.SIZE >>> Bio.SECTOR_SHIFT, Gfp.NOIO, s.set());
            Bio.chain(front, s.top());
            assertTrue(ref.tryHold(front, ch, 0));
            s.top().setStatus(BioStatus.IOERR);
            s.top().endio(); // the back part failed
            assertEquals(List.of(s.top()), s.completed(), "the READ did not wait for a send that will not come");
            assertEquals(BioStatus.IOERR, s.top().status());
            assertEquals(0, told[0]);
            assertEquals(0, ref.extentCount());
            free(tk, s);
        }
    }

    /**
     * A held part gives its bios back only when the whole READ is sent, so a later part that
     * waited for one of them would wait for ever (a set's reserve can be all held that way under a
     * small arena). With the arena full and the set's reserve of one its only bio, proves the
     * clone of the back part, finding the set empty, refuses the offer before it waits: the held
     * front part is read into its page and completes, its bio returns to the reserve, and the
     * clone gets it.
     */
    @Test
    void aCloneThatWouldWaitForABioRefusesTheOfferFirst() throws Exception {
        Path path = dir.resolve("f");
        byte[] data = file(path);
        try (TestKernel tk = new TestKernel("read-reference");
                FileChannel ch = FileChannel.open(path, StandardOpenOption.READ)) {
            Setup s = twoPageRead(tk);
            BioSet clones = new BioSet(tk.kernel, "clones", 1, 0, null, false);
            List<Page> arena = new ArrayList<>();
            for (Page p = tk.kernel.pages().alloc(Gfp.NOWAIT); p != null; p = tk.kernel.pages().alloc(Gfp.NOWAIT)) {
                arena.add(p);
            }
            List<Bio> drained = new ArrayList<>();
            for (Bio b = clones.alloc(Gfp.NOWAIT, 0); b != null; b = clones.alloc(Gfp.NOWAIT, 0)) {
                drained.add(b);
            }
            drained.removeLast().put(); // back to the empty reserve: the set's only free bio
            ReadReference ref = new ReadReference();
            int[] told = new int[1];
            ref.arm(s.top(), r -> told[0]++, null);
            Bio front = Bio.split(s.top(), Page.SIZE >>> Bio.SECTOR_SHIFT, Gfp.NOIO, clones);
            Bio.chain(front, s.top());
            assertTrue(ref.tryHold(front, ch, 0), "the front part holds the set's only bio");
            Bio[] back = new Bio[1];
            Completion cloned = new Completion("back part cloned");
            tk.kernel.spawn("cloner", TaskKind.USER, () -> {
                back[0] = Bio.clone(s.top(), Gfp.NOIO, clones);
                cloned.complete();
            });
            assertTrue(cloned.await(30_000_000_000L), "the clone waits for the bio the held front part keeps");
            assertNull(s.top().readReference(), "the offer was refused");
            assertEquals(0, told[0]);
            assertEquals(0, ref.extentCount(), "the held part was completed");
            assertEquals(0, tk.kernel.counters().value("mempool.waits"), "the clone never waited");
            byte[] got = new byte[Page.SIZE];
            s.pages()[0].buffer().get(0, got, 0, Page.SIZE);
            assertArrayEquals(java.util.Arrays.copyOf(data, Page.SIZE), got, "the held part was read into its page");
            back[0].put();
            s.top().copyFrom(java.util.Arrays.copyOfRange(data, Page.SIZE, 2 * Page.SIZE), 0);
            s.top().endio();
            assertEquals(List.of(s.top()), s.completed(), "the READ completes from pages");
            drained.forEach(Bio::put);
            arena.forEach(tk.kernel.pages()::free);
            clones.close();
            free(tk, s);
        }
    }
}
