package io.blkstack.block;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioSet;
import io.blkstack.bio.BioStatus;
import java.util.List;
import java.util.Random;
import java.util.Set;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.Combinators;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import net.jqwik.api.constraints.IntRange;

/**
 * Split and chain against a reference model: writes of random ranges go through a stack of devices
 * that split at random boundaries and remap at offsets, down to the reference memory device; every
 * write is read back through the stack and compared with a byte-array model, and so is the whole
 * device at the end. Errors injected in one fragment must reach the original's completion.
 */
class SplitChainPropertyTest {

    /** Sectors of the top device. */
    private static final int CAPACITY = 512;
    /** Largest write, in sectors (64 KiB). */
    private static final int WRITE_MAX = 128;

    /** One write: where, how long, and the seed of its data and segment layout. */
    record Write(int sector, int sectors, long seed) {
    }

    @Provide
    Arbitrary<List<Write>> writes() {
        Arbitrary<Write> write = Combinators.combine(
                Arbitraries.integers().between(0, CAPACITY - 1),
                Arbitraries.integers().between(1, WRITE_MAX),
                Arbitraries.longs())
                .as((s, n, seed) -> new Write(s, Math.min(n, CAPACITY - s), seed));
        return write.list().ofMinSize(1).ofMaxSize(6);
    }

    /** A stack of {@code levels} splitting devices over a reference device; returns the top. */
    private static BlockDevice stack(TestKernel tk, int levels, Random random, RefMemoryDevice[] bottom) {
        long[] offsets = new long[levels];
        long extra = 0;
        for (int i = 0; i < levels; i++) {
            offsets[i] = random.nextInt(9);
            extra += offsets[i];
        }
        bottom[0] = new RefMemoryDevice(tk.kernel, "ref", CAPACITY + extra, QueueLimits.defaults(), null);
        BlockDevice dev = bottom[0];
        for (int i = levels - 1; i >= 0; i--) {
            dev = new SplitRemapDevice(tk.kernel, "split" + i, dev, offsets[i], random);
        }
        assertEquals(CAPACITY, dev.capacitySectors());
        return dev;
    }

    @Property(tries = 60)
    void readsReturnExactlyWhatWasWritten(@ForAll("writes") List<Write> writes,
            @ForAll @IntRange(min = 1, max = 4) int levels, @ForAll long stackSeed) {
        byte[] model = new byte[CAPACITY * Bio.SECTOR_SIZE];
        try (TestKernel tk = new TestKernel("split-property");
                DataBuffers buffers = new DataBuffers(tk.kernel)) {
            Random random = new Random(stackSeed);
            BlockDevice top = stack(tk, levels, random, new RefMemoryDevice[1]);
            BioSet client = new BioSet(tk.kernel, "client", 2, 2, null, false);
            for (Write w : writes) {
                Random data = new Random(w.seed());
                byte[] payload = new byte[w.sectors() * Bio.SECTOR_SIZE];
                data.nextBytes(payload);
                Bio bio = buffers.bio(client, top, BioOp.WRITE, w.sector(), payload.length, data);
                bio.copyFrom(payload, 0);
                assertEquals(0, Submit.submitAndWait(bio), "write " + w);
                bio.put();
                System.arraycopy(payload, 0, model, w.sector() * Bio.SECTOR_SIZE, payload.length);

                Bio read = buffers.bio(client, top, BioOp.READ, w.sector(), payload.length, data);
                assertEquals(0, Submit.submitAndWait(read), "read back " + w);
                // Splits advanced the read's iterator: read the pages it owns, as an owner does.
                byte[] got = DataBuffers.contents(read);
                read.put();
                assertArrayEquals(payload, got, "read back " + w);
            }
            Bio whole = buffers.bio(client, top, BioOp.READ, 0, model.length, random);
            assertEquals(0, Submit.submitAndWait(whole));
            byte[] got = DataBuffers.contents(whole);
            whole.put();
            assertArrayEquals(model, got, "whole device against the model");
        }
    }

    @Property(tries = 60)
    void anErrorInOneFragmentReachesTheOriginal(@ForAll("writes") List<Write> writes,
            @ForAll @IntRange(min = 1, max = 4) int levels, @ForAll long stackSeed,
            @ForAll @IntRange(min = 0, max = 1000) int badPick) {
        Write w = writes.get(0);
        try (TestKernel tk = new TestKernel("split-error-property");
                DataBuffers buffers = new DataBuffers(tk.kernel)) {
            Random random = new Random(stackSeed);
            RefMemoryDevice[] bottom = new RefMemoryDevice[1];
            BlockDevice top = stack(tk, levels, random, bottom);
            long bottomOffset = bottom[0].capacitySectors() - CAPACITY;
            int badSector = w.sector() + badPick % w.sectors();
            bottom[0].fail(badSector + bottomOffset, BioStatus.IOERR);
            BioSet client = new BioSet(tk.kernel, "client", 2, 2, null, false);
            Bio bio = buffers.bio(client, top, BioOp.WRITE, w.sector(), w.sectors() * Bio.SECTOR_SIZE,
                    new Random(w.seed()));
            assertEquals(BioStatus.IOERR, Submit.submitAndWaitStatus(bio), "write " + w + " bad " + badSector);
            bio.put();
            // A second, different error elsewhere: the original reports one of the two, never OK.
            if (w.sectors() > 1) {
                int other = w.sector() + (badPick + 1) % w.sectors();
                bottom[0].fail(other + bottomOffset, BioStatus.NOSPC);
                Bio again = buffers.bio(client, top, BioOp.READ, w.sector(), w.sectors() * Bio.SECTOR_SIZE, null);
                BioStatus status = Submit.submitAndWaitStatus(again);
                assertTrue(Set.of(BioStatus.IOERR, BioStatus.NOSPC).contains(status), "status " + status);
                again.put();
            }
        }
    }
}
