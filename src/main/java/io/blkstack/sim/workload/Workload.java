package io.blkstack.sim.workload;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioSet;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.Submit;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.TaskKind;
import io.blkstack.mem.Gfp;
import io.blkstack.mem.Page;
import io.blkstack.sim.SimFaults;
import io.blkstack.sim.SimScheduler;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.function.Consumer;

/**
 * Runs a {@link WorkloadSpec} against the top device of a stack and checks every read against a
 * reference model: a read must return what was last written.
 *
 * <p>The check is exact under any interleaving because every task owns one slice of the region
 * and issues one operation at a time (submit, then wait for the completion): the model of a slice
 * changes only when its task's write completes, and nobody else writes there. Sectors never
 * written, or whose last write failed (a fault), are unknown and not compared. Each write fills its
 * pages with a pattern made of a per-write stamp and the byte's device offset, so data landing at
 * the wrong place is caught as well as corrupted data.
 *
 * <p>Bios come from the workload's own {@link BioSet} (one bio and one vec array in reserve per
 * task) and data pages are taken up front, before the optional pressure phase takes every free
 * page: from then on the stack underneath lives on its pool reserves. A mismatch is reported to
 * the simulated scheduler ({@link SimScheduler#reportDataMismatch}), which ends the run as
 * {@code DATA_MISMATCH}; under the real scheduler it is an {@link IllegalStateException}.
 *
 * <p>A stack whose construction fails after an injected I/O error ({@code io:<device>}) has
 * refused to start, which is the right answer (a pool that cannot read its superblock): the run
 * counts {@code workload.stack-refused} and ends without tasks, and still goes through the kernel's
 * leak checks. Without an injected I/O error a construction failure stays a crash.
 */
public final class Workload implements Consumer<Kernel> {

    /** Builds a stack's devices in a kernel and returns the top one. */
    @FunctionalInterface
    public interface StackBuilder {
        BlockDevice build(Kernel kernel);
    }

    /** The name of the workload's bio set. */
    public static final String BIO_SET = "workload";
    /** Bytes of a pattern word. */
    private static final int WORD = Long.BYTES;

    private final StackBuilder stack;
    private final WorkloadSpec spec;

    /** A workload of {@code spec} against the top device {@code stack} builds. */
    public Workload(StackBuilder stack, WorkloadSpec spec) {
        this.stack = stack;
        this.spec = spec;
    }

    /** Builds the stack, takes pages, applies pressure, runs the tasks, waits for them and gives memory back. */
    @Override
    public void accept(Kernel kernel) {
        BlockDevice top;
        try {
            top = stack.build(kernel);
        } catch (RuntimeException e) {
            if (!ioFaultFired(kernel)) {
                throw e;
            }
            // An injected I/O error made a target's constructor fail (a pool that cannot read its
            // superblock, a snapshot that cannot write its header): refusing to start is the right
            // answer, not a crash. The run still ends with the kernel's close, so whatever the
            // half-built stack failed to give back is reported as a leak.
            kernel.counters().get("workload.stack-refused").incrementAndGet();
            kernel.tracer().event(Task.currentOrNull(), "stack-refused", String.valueOf(e.getMessage()));
            return;
        }
        if (spec.regionEndBytes() > top.capacityBytes()) {
            throw new IllegalArgumentException("workload region " + spec.regionStartBytes() + "-" + spec.regionEndBytes()
                    + " ends past device " + top.name() + " of " + top.capacityBytes() + " bytes");
        }
        BioSet bioSet = new BioSet(kernel, BIO_SET, spec.tasks(), spec.tasks(), null, false);
        List<List<Page>> pages = new ArrayList<>();
        List<Page> hoard = new ArrayList<>();
        try {
            for (int t = 0; t < spec.tasks(); t++) {
                List<Page> own = new ArrayList<>();
                for (int i = 0; i < spec.pagesPerTask(); i++) {
                    own.add(kernel.pages().alloc(Gfp.KERNEL));
                }
                pages.add(own);
            }
            if (spec.pressure()) {
                exhaust(kernel, hoard);
            }
            List<Task> tasks = new ArrayList<>();
            for (int t = 0; t < spec.tasks(); t++) {
                TaskRun run = new TaskRun(kernel, top, bioSet, pages.get(t), t, randomSeed(kernel, t));
                tasks.add(kernel.spawn("io" + t, TaskKind.USER, run::run));
            }
            for (Task t : tasks) {
                kernel.scheduler().join(t);
            }
        } finally {
            hoard.forEach(kernel.pages()::free);
            pages.forEach(list -> list.forEach(kernel.pages()::free));
        }
    }

    /** Whether an injected I/O error ({@code io:<device>} fault site) fired in this run so far. */
    private static boolean ioFaultFired(Kernel kernel) {
        if (!(kernel.faults() instanceof SimFaults faults)) {
            return false;
        }
        for (Map.Entry<String, Long> e : faults.fires().entrySet()) {
            if (e.getKey().startsWith("io:") && e.getValue() > 0) {
                return true;
            }
        }
        return false;
    }

    /** A task's seed: drawn from the run's stream when simulated (so seeds vary the operations), fixed otherwise. */
    private static long randomSeed(Kernel kernel, int taskIndex) {
        if (kernel.scheduler() instanceof SimScheduler sim) {
            return sim.random().nextLong();
        }
        return 0x5eed_0000L + taskIndex;
    }

    /** Takes every free page but {@code sparePages} without waiting. */
    private void exhaust(Kernel kernel, List<Page> hoard) {
        int pagesMax = kernel.pages().totalPages();
        while (kernel.pages().freePages() > spec.sparePages()) {
            Page p = kernel.pages().alloc(Gfp.NOWAIT);
            if (p == null) {
                break;
            }
            hoard.add(p);
            if (hoard.size() > pagesMax) {
                throw new IllegalStateException("took " + hoard.size() + " pages from an arena of " + pagesMax);
            }
        }
    }

    /** One task: its slice, its pages, its random stream and its reference model. */
    private final class TaskRun {
        private final Kernel kernel;
        private final BlockDevice dev;
        private final BioSet bioSet;
        private final List<Page> pages;
        private final int index;
        private final SplittableRandom random;
        private final long sliceStart;
        private final byte[] expected;
        private final boolean[] known;
        private int dataOps;

        TaskRun(Kernel kernel, BlockDevice dev, BioSet bioSet, List<Page> pages, int index, long seed) {
            this.kernel = kernel;
            this.dev = dev;
            this.bioSet = bioSet;
            this.pages = pages;
            this.index = index;
            this.random = new SplittableRandom(seed);
            this.sliceStart = spec.regionStartBytes() + index * spec.sliceBytes();
            this.expected = new byte[Math.toIntExact(spec.sliceBytes())];
            this.known = new boolean[expected.length / Bio.SECTOR_SIZE];
        }

        /** Issues the task's operations one at a time; stops at the first mismatch. */
        void run() {
            for (int op = 0; op < spec.opsPerTask(); op++) {
                int draw = random.nextInt(100);
                boolean ok;
                if (draw < spec.writePercent()) {
                    ok = write(op);
                } else if (draw < spec.writePercent() + spec.readPercent()) {
                    ok = read(op);
                } else {
                    flush();
                    continue;
                }
                if (!ok) {
                    return;
                }
                dataOps++;
                if (spec.flushEvery() > 0 && dataOps % spec.flushEvery() == 0) {
                    flush();
                }
            }
        }

        /** Picks a size and an offset inside the slice, both in whole sectors. */
        private long[] pickRange() {
            int sizeSteps = (spec.sizeMaxBytes() - spec.sizeMinBytes()) / Bio.SECTOR_SIZE;
            int size = spec.sizeMinBytes() + random.nextInt(sizeSteps + 1) * Bio.SECTOR_SIZE;
            long offsetSteps = (expected.length - size) / Bio.SECTOR_SIZE;
            long offset = random.nextLong(offsetSteps + 1) * Bio.SECTOR_SIZE;
            return new long[] {offset, size};
        }

        /** A bio over the task's pages for {@code size} bytes at slice offset {@code offset}. */
        private Bio dataBio(BioOp op, long offset, int size) {
            int n = (size + Page.SIZE - 1) / Page.SIZE;
            Bio bio = bioSet.alloc(Gfp.NOIO, n);
            bio.init(dev, op, 0, (sliceStart + offset) >>> Bio.SECTOR_SHIFT);
            for (int i = 0; i < n; i++) {
                int len = Math.min(Page.SIZE, size - i * Page.SIZE);
                if (!bio.addPage(pages.get(i), len, 0)) {
                    throw new IllegalStateException("bio of " + n + " vecs refused page " + i + ": " + bio);
                }
            }
            return bio;
        }

        /** Writes a fresh pattern; on success the model takes it, on failure the range becomes unknown. */
        private boolean write(int op) {
            long[] r = pickRange();
            long offset = r[0];
            int size = (int) r[1];
            long stamp = random.nextLong();
            // The model takes the pattern now; "known" (set after the completion) decides whether it counts.
            for (int pos = 0; pos < size; pos += WORD) {
                long word = pattern(stamp, sliceStart + offset + pos);
                Page page = pages.get(pos / Page.SIZE);
                for (int b = 0; b < WORD; b++) {
                    byte v = (byte) (word >>> (8 * b));
                    expected[(int) (offset + pos + b)] = v;
                    page.buffer().put(pos % Page.SIZE + b, v);
                }
            }
            Bio bio = dataBio(BioOp.WRITE, offset, size);
            BioStatus status = Submit.submitAndWaitStatus(bio);
            bio.put();
            boolean ok = status == BioStatus.OK;
            for (int s = 0; s < size / Bio.SECTOR_SIZE; s++) {
                known[(int) (offset / Bio.SECTOR_SIZE) + s] = ok;
            }
            return true;
        }

        /** Reads a range and compares every known sector with the model. */
        private boolean read(int op) {
            long[] r = pickRange();
            long offset = r[0];
            int size = (int) r[1];
            for (int i = 0; i * Page.SIZE < size; i++) {
                pages.get(i).zero(0, Page.SIZE);
            }
            Bio bio = dataBio(BioOp.READ, offset, size);
            BioStatus status = Submit.submitAndWaitStatus(bio);
            bio.put();
            if (status != BioStatus.OK) {
                return true; // an injected I/O error: nothing to compare
            }
            for (int pos = 0; pos < size; pos++) {
                int at = (int) (offset + pos);
                if (!known[at / Bio.SECTOR_SIZE]) {
                    continue;
                }
                byte actual = pages.get(pos / Page.SIZE).buffer().get(pos % Page.SIZE);
                if (actual != expected[at]) {
                    mismatch(op, sliceStart + at, expected[at], actual, size);
                    return false;
                }
            }
            return true;
        }

        /** Flushes the device and waits. */
        private void flush() {
            Bio bio = bioSet.alloc(Gfp.NOIO, 0);
            bio.init(dev, BioOp.FLUSH, 0, 0);
            Submit.submitAndWaitStatus(bio);
            bio.put();
        }

        /** Reports a read that disagrees with the model. */
        private void mismatch(int op, long deviceOffset, byte want, byte got, int size) {
            String what = String.format("data mismatch on %s: operation %d of task io%d read %d bytes; byte at device"
                    + " offset %d (sector %d) is 0x%02x, the last write there put 0x%02x", dev.name(), op, index, size,
                    deviceOffset, deviceOffset >>> Bio.SECTOR_SHIFT, got & 0xff, want & 0xff);
            if (kernel.scheduler() instanceof SimScheduler sim) {
                sim.reportDataMismatch(Task.current(), what);
            } else {
                throw new IllegalStateException(what);
            }
        }
    }

    /** The pattern word of a write stamped {@code stamp} at device byte offset {@code deviceOffset}. */
    static long pattern(long stamp, long deviceOffset) {
        long z = stamp + deviceOffset * 0x9E3779B97F4A7C15L;
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        return z ^ (z >>> 31);
    }
}
