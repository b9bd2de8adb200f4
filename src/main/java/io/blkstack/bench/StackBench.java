package io.blkstack.bench;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioEndIo;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioSet;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.MemoryDevice;
import io.blkstack.block.NullDevice;
import io.blkstack.block.Submit;
import io.blkstack.dm.MappedDevice;
import io.blkstack.dm.Table;
import io.blkstack.dm.TableException;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.TaskKind;
import io.blkstack.kernel.WaitQueue;
import io.blkstack.mem.Gfp;
import io.blkstack.mem.Page;
import java.io.PrintWriter;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Measures bios per second through stacks of 1..N mapped devices, each one {@code linear} target over
 * the one below (the first over a null or memory bottom device), in
 * one process and one run, so that the cost of a layer shows as a ratio against the one-layer
 * stack measured beside it. Never asserts a timing: it prints figures.
 */
public final class StackBench {

    /** One run's result. */
    public record Result(int layers, long bios, long bytes, long nanos) {
        double biosPerSecond() {
            return bios * 1e9 / nanos;
        }

        double bytesPerSecond() {
            return bytes * 1e9 / nanos;
        }
    }

    /** The bottom device kind. */
    public enum Bottom { NULL, MEMORY }

    private final Bottom bottom;
    private final long memoryBytes;
    private final int blockSizeBytes;
    private final long runNanos;
    private final int submitters;
    private final int depthPerSubmitter;

    public StackBench(Bottom bottom, long memoryBytes, int blockSizeBytes, long runNanos, int submitters,
            int depthPerSubmitter) {
        if (blockSizeBytes <= 0 || blockSizeBytes % Bio.SECTOR_SIZE != 0 || blockSizeBytes > Bio.VECS_MAX * Page.SIZE) {
            throw new IllegalArgumentException("block size " + blockSizeBytes + " must be a positive multiple of 512 up to "
                    + Bio.VECS_MAX * Page.SIZE);
        }
        this.bottom = bottom;
        this.memoryBytes = memoryBytes;
        this.blockSizeBytes = blockSizeBytes;
        this.runNanos = runNanos;
        this.submitters = submitters;
        this.depthPerSubmitter = depthPerSubmitter;
    }

    /** Runs one stack depth in a fresh kernel. */
    public Result run(int layers) {
        try (Kernel kernel = Kernel.builder().name("bench-" + layers).memory(memoryBytes).build();
                Kernel.Attachment self = kernel.attach("bench")) {
            long deviceBytes = 1L << 30;
            BlockDevice device = bottom == Bottom.NULL
                    ? new NullDevice(kernel, "bottom", deviceBytes, 0)
                    : new MemoryDevice(kernel, "bottom", 64L << 20, 0);
            for (int i = 0; i < layers; i++) {
                device = linearOver(kernel, "layer" + i, device);
            }
            BlockDevice top = device;
            int pagesPerBio = (blockSizeBytes + Page.SIZE - 1) / Page.SIZE;
            BioSet bioSet = new BioSet(kernel, "bench", submitters * depthPerSubmitter, submitters * depthPerSubmitter,
                    null, false);
            AtomicLong bios = new AtomicLong();
            long start = kernel.scheduler().nanoTime();
            long deadline = start + runNanos;
            List<Task> tasks = new ArrayList<>();
            for (int s = 0; s < submitters; s++) {
                long seed = s;
                tasks.add(kernel.spawn("submitter" + s, TaskKind.USER,
                        () -> bios.addAndGet(submitLoop(kernel, top, bioSet, pagesPerBio, deadline, seed))));
            }
            tasks.forEach(kernel.scheduler()::join);
            long nanos = kernel.scheduler().nanoTime() - start;
            return new Result(layers, bios.get(), bios.get() * blockSizeBytes, nanos);
        }
    }

    /** A mapped device with one {@code linear} target covering all of {@code lower}. */
    private static BlockDevice linearOver(Kernel kernel, String name, BlockDevice lower) {
        String line = "0 " + lower.capacitySectors() + " linear " + lower.name() + " 0";
        try {
            Table table = Table.parse(kernel, name, line, n -> n.equals(lower.name()) ? lower : null);
            return new MappedDevice(kernel, name, table);
        } catch (TableException e) {
            throw new IllegalStateException("bench table '" + line + "' is invalid: " + e.getMessage(), e);
        }
    }

    /** One submitter: keeps {@code depthPerSubmitter} bios in flight until the deadline. */
    private long submitLoop(Kernel kernel, BlockDevice top, BioSet bioSet, int pagesPerBio, long deadline, long seed) {
        Page[] pages = new Page[pagesPerBio];
        for (int i = 0; i < pagesPerBio; i++) {
            pages[i] = kernel.pages().alloc(Gfp.KERNEL);
        }
        AtomicInteger inFlight = new AtomicInteger();
        AtomicLong errors = new AtomicLong();
        WaitQueue slotFree = new WaitQueue("bench slots");
        BioEndIo done = bio -> {
            if (bio.status() != BioStatus.OK) {
                errors.incrementAndGet();
            }
            bio.put();
            inFlight.decrementAndGet();
            slotFree.wakeOne();
        };
        SplittableRandom random = new SplittableRandom(seed);
        long blocks = top.capacityBytes() / blockSizeBytes;
        long submitted = 0;
        while (kernel.scheduler().nanoTime() < deadline) {
            slotFree.waitEvent(() -> inFlight.get() < depthPerSubmitter, "bench slot");
            Bio bio = bioSet.alloc(Gfp.NOIO, pagesPerBio);
            int left = blockSizeBytes;
            for (int i = 0; left > 0; i++) {
                int len = Math.min(left, Page.SIZE);
                bio.addPage(pages[i], len, 0);
                left -= len;
            }
            BioOp op = (submitted & 1) == 0 ? BioOp.READ : BioOp.WRITE;
            bio.init(top, op, 0, random.nextLong(blocks) * (blockSizeBytes / Bio.SECTOR_SIZE));
            bio.setEndIo(done);
            inFlight.incrementAndGet();
            Submit.submitBio(bio);
            submitted++;
        }
        slotFree.waitEvent(() -> inFlight.get() == 0, "bench drain");
        for (Page p : pages) {
            kernel.pages().free(p);
        }
        if (errors.get() != 0) {
            throw new IllegalStateException(errors.get() + " bios failed during the benchmark");
        }
        return submitted;
    }

    /** Runs every depth and prints a table with the ratio of each to the first. */
    public List<Result> runAll(List<Integer> layerCounts, PrintWriter out) {
        return runAll(layerCounts, out, label -> { });
    }

    /**
     * As {@link #runAll(List, PrintWriter)}, calling {@code afterEach} with a label after every run
     * (the warm-up and each depth: {@code layerCounts.size() + 1} calls), for a progress bar.
     */
    public List<Result> runAll(List<Integer> layerCounts, PrintWriter out, java.util.function.Consumer<String> afterEach) {
        List<Result> results = new ArrayList<>();
        out.printf("blkstack bench stack: %s bottom device, %d-byte bios, %d submitters x %d in flight, %.1f s per run%n",
                bottom.name().toLowerCase(), blockSizeBytes, submitters, depthPerSubmitter, runNanos / 1e9);
        run(layerCounts.get(0)); // warm-up: JIT and page faults, not reported
        afterEach.accept("warm-up");
        out.printf("%8s %14s %14s %10s%n", "layers", "bios/s", "MiB/s", "ratio");
        for (int layers : layerCounts) {
            Result r = run(layers);
            results.add(r);
            afterEach.accept(layers + " layers");
            double ratio = r.biosPerSecond() / results.get(0).biosPerSecond();
            out.printf("%8d %14.0f %14.1f %10.2f%n", layers, r.biosPerSecond(), r.bytesPerSecond() / (1 << 20), ratio);
            out.flush();
        }
        return results;
    }
}
