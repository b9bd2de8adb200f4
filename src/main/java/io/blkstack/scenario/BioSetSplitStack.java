package io.blkstack.scenario;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioSet;
import io.blkstack.block.NullDevice;
import io.blkstack.block.Submit;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.TaskKind;
import io.blkstack.mem.Gfp;
import io.blkstack.mem.Page;
import java.util.ArrayList;
import java.util.List;
import java.util.function.Consumer;

/**
 * The built-in {@code bioset-split} stack and its workload, made only of core components: a
 * {@link SplittingDevice} over a {@link NullDevice} with a latency, and {@code tasks} user tasks
 * that each write {@code opsPerTask} bios of {@code bioSectors} through it and wait for each.
 *
 * <p>Memory is exhausted before the tasks start: the main task takes every free page, then every
 * free object of the splitting set's slab except {@code spareBios}, so the set can hand out only
 * its reserve plus the spare bios, and slab growth fails. With a 1-element reserve, one spare and
 * two splits per bio, one task alone always gets through, but two tasks that each hold a front on
 * their pending list while asking for the next one wait for each other: the deadlock of seed 000,
 * reachable only on some interleavings. The data pages and user bios are allocated up front.
 *
 * @param tasks user tasks submitting at once
 * @param opsPerTask bios each task writes, one at a time
 * @param bioSectors the size of each bio (at most 8: one page)
 * @param splitSectors the splitting device's largest piece
 * @param reserve the splitting set's reserve
 * @param rescuer whether the splitting set has a rescuer
 * @param spareBios free slab objects left to the splitting set beyond its reserve
 * @param latencyNanos the null device's completion latency
 */
public record BioSetSplitStack(int tasks, int opsPerTask, int bioSectors, int splitSectors, int reserve, boolean rescuer,
        int spareBios, long latencyNanos) implements Consumer<Kernel> {

    /** The name of the splitting device; its bio set is {@code <name>-bs}. */
    public static final String DEVICE = "splitter";
    /** The name of the null device underneath. */
    public static final String LOWER = "null0";

    /** Checks the parameters. */
    public BioSetSplitStack {
        if (tasks < 1 || opsPerTask < 1) {
            throw new IllegalArgumentException("bioset-split: tasks " + tasks + " and ops " + opsPerTask + " must be >= 1");
        }
        if (bioSectors < 1 || bioSectors > Page.SIZE / Bio.SECTOR_SIZE || splitSectors < 1 || splitSectors >= bioSectors) {
            throw new IllegalArgumentException("bioset-split: bio of " + bioSectors + " sectors (at most "
                    + Page.SIZE / Bio.SECTOR_SIZE + ") must be larger than the split size " + splitSectors);
        }
        if (spareBios < 0 || latencyNanos < 0) {
            throw new IllegalArgumentException("bioset-split: spare bios " + spareBios + " and latency " + latencyNanos
                    + " ns must not be negative");
        }
    }

    /**
     * The stack of the checker's tests and examples: 3 tasks, 2 bios each, 3 pieces per bio, a
     * 1-element reserve and one spare bio, a null device with 50 us latency.
     */
    public static BioSetSplitStack standard(boolean rescuer) {
        return new BioSetSplitStack(3, 2, 6, 2, 1, rescuer, 1, 50_000);
    }

    /** The name the explanations use for the splitting set. */
    public static String bioSetName() {
        return "bioset " + DEVICE + "-bs";
    }

    /** Builds the stack, exhausts memory, runs the tasks, waits for them and gives everything back. */
    @Override
    public void accept(Kernel kernel) {
        NullDevice lower = new NullDevice(kernel, LOWER, 1L << 20, latencyNanos);
        SplittingDevice dev = new SplittingDevice(kernel, DEVICE, lower, splitSectors, reserve, rescuer);
        BioSet userSet = new BioSet(kernel, "user", tasks, tasks, null, false);
        List<Page> dataPages = new ArrayList<>();
        for (int t = 0; t < tasks; t++) {
            dataPages.add(kernel.pages().alloc(Gfp.KERNEL));
        }
        List<Page> hoard = new ArrayList<>();
        List<Bio> hoardBios = new ArrayList<>();
        exhaust(kernel, dev.bioSet(), hoard, hoardBios);
        List<Task> workers = new ArrayList<>();
        for (int t = 0; t < tasks; t++) {
            Page page = dataPages.get(t);
            long base = (long) t * opsPerTask * bioSectors;
            workers.add(kernel.spawn("user" + t, TaskKind.USER, () -> writeAll(dev, userSet, page, base)));
        }
        for (Task w : workers) {
            kernel.scheduler().join(w);
        }
        hoardBios.forEach(Bio::put);
        hoard.forEach(kernel.pages()::free);
        dataPages.forEach(kernel.pages()::free);
    }

    /**
     * Takes every page the arena gives without waiting, then every bio the splitting set's slab has
     * free except {@code spareBios}, leaving its reserve full.
     */
    private void exhaust(Kernel kernel, BioSet set, List<Page> hoard, List<Bio> hoardBios) {
        int pagesMax = kernel.pages().totalPages();
        for (Page p = kernel.pages().alloc(Gfp.NOWAIT); p != null; p = kernel.pages().alloc(Gfp.NOWAIT)) {
            hoard.add(p);
            if (hoard.size() > pagesMax) {
                throw new IllegalStateException("took " + hoard.size() + " pages from an arena of " + pagesMax);
            }
        }
        // A bound on the loop: a slab cannot hold more objects than the arena has bytes.
        long bioMax = (long) pagesMax * Page.SIZE;
        while (hoardBios.size() <= bioMax) {
            Bio b = set.alloc(Gfp.NOWAIT, 0);
            if (b == null) {
                break;
            }
            if (set.bioPool().reserveLevel() < set.bioPool().minNr()) {
                b.put();
                break;
            }
            hoardBios.add(b);
        }
        for (int i = 0; i < spareBios && !hoardBios.isEmpty(); i++) {
            hoardBios.remove(hoardBios.size() - 1).put();
        }
    }

    /** One task's workload: write its bios one at a time through the splitting device. */
    private void writeAll(SplittingDevice dev, BioSet userSet, Page page, long base) {
        for (int i = 0; i < opsPerTask; i++) {
            Bio bio = userSet.alloc(Gfp.NOIO, 1);
            bio.init(dev, BioOp.WRITE, 0, base + (long) i * bioSectors);
            if (!bio.addPage(page, bioSectors * Bio.SECTOR_SIZE, 0)) {
                throw new IllegalStateException("a one-page bio refused its page: " + bio);
            }
            int err = Submit.submitAndWait(bio);
            bio.put();
            if (err != 0) {
                throw new IllegalStateException("write of " + bioSectors + " sectors at " + (base + (long) i * bioSectors)
                        + " through " + dev.name() + " failed: " + err);
            }
        }
    }
}
