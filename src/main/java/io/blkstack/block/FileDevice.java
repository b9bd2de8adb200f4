package io.blkstack.block;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioFlags;
import io.blkstack.bio.BioIter;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioStatus;
import io.blkstack.bio.ReadReference;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.PolicySwitch;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.WaitQueue;
import io.blkstack.mem.Gfp;
import io.blkstack.mem.Mempool;
import io.blkstack.mem.Page;
import io.blkstack.mem.PageAllocator;
import java.io.IOException;
import java.io.RandomAccessFile;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.OpenOption;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;

/**
 * A bottom device backed by a file: positional {@link FileChannel} I/O on a fixed set of device
 * I/O tasks behind a bounded {@link DeviceQueue} (DESIGN.md section 4, "Bottom devices").
 *
 * <p><b>Submission.</b> {@link #submitBio} puts the bio in the queue's ring. When every slot is in
 * flight the submitter sleeps until one frees: that is the device's queue depth, and it cannot
 * deadlock, because slots are freed by the device's own tasks, which wait for nothing the
 * submitter holds. A bio flagged {@link BioFlags#NOWAIT} never sleeps there; it completes with
 * {@link BioStatus#AGAIN}.
 *
 * <p><b>Direct issue.</b> Under the policy {@code direct-issue} (DESIGN.md section 4), a plain
 * READ or WRITE that finds the queue idle ({@link DeviceQueue#tryIssueDirectly}) is served by the
 * submitting task itself, with its own per-lane state, and completed there: one hand-off less, and
 * the payload stays in the submitter's cache. It is only taken where it cannot block in a way the
 * rules forbid: never in atomic context (a completion callback or timer, rule 2 of DESIGN.md
 * section 1), never for a bio that needs a bounce or scratch page (the bounce reserve holds one
 * page per I/O task, so a submitter must not take from it), and never for PREFLUSH, FUA, FLUSH,
 * DISCARD or WRITE_ZEROES (a {@code force} or a hole punch is worth the hand-off). The request
 * holds a queue slot while it is served, so the queue depth bounds both paths together.
 *
 * <p><b>Service.</b> Each I/O task takes a bio, moves its segments with {@link SegmentViews} (no
 * copy; pages contiguous in the arena merge into one view, so a bulk-allocated bio is one write),
 * sets the status ({@link IOException} becomes {@link BioStatus#IOERR}: errors travel as values) and
 * calls {@link Bio#endio} from the device task. WRITE with FUA is the write followed by
 * {@code force(false)}; PREFLUSH forces before the bio; FLUSH is {@code force(false)}. A force is
 * skipped when nothing changed the file since the last one that completed: every WRITE, DISCARD and
 * WRITE_ZEROES counts a change when it finished (or failed), and a completed force records the count
 * it saw before it began, so a flush after no change (a commit's PREFLUSH right after the previous
 * commit's FUA, say) costs no {@code fdatasync}. Fault sites:
 * {@code io:<name>} fails the bio with IOERR, {@code latency:<name>} sleeps the I/O task first.
 *
 * <p><b>Holes, DISCARD and WRITE_ZEROES.</b> Where the file system tells ({@link FileHoles}:
 * {@code SEEK_HOLE}/{@code SEEK_DATA} and {@code fallocate} through the foreign-function API, on
 * Linux), the device knows its holes ({@link #knowsAllocation}, {@link #allocatedExtent}, so NBD
 * block status and READ replies show them), a DISCARD punches a hole (the space goes back to the
 * file system) and so does a WRITE_ZEROES without {@link BioFlags#NOUNMAP} (NBD's {@code NO_HOLE}),
 * unless the range is a hole already (asked first, outside a known data run): then nothing changes.
 * Otherwise (another platform, {@link Options#withNativeHoles} off, a file system without them),
 * and for WRITE_ZEROES with NOUNMAP, the range is made to read as zeros by writing: each 4 KiB chunk
 * is read first and overwritten from a zero page only if it holds data, so zeroing a never-written
 * range of a sparse image allocates nothing; the device then reports every range allocated.
 *
 * <p><b>Direct I/O and bounce pages.</b> With {@code direct} the channel is opened with
 * {@code O_DIRECT}, which needs buffer addresses, file positions and lengths aligned to the file
 * system's block size. The device's logical block size is raised to that alignment, so every bio's
 * position and size are aligned; a bio with any segment whose page offset or length is not aligned
 * is served through a bounce page instead: each aligned 4 KiB window of the bio is gathered into
 * (write) or scattered out of (read) one page taken from the device's private bounce mempool. An
 * I/O task holds at most one bounce page at a time and the reserve holds one per task, so a
 * bounce never waits for memory that another bounce holds (the golden rule of seed 002: a private
 * pool, rule 1 of DESIGN.md section 1). {@link Options#bounceAlignment} applies the same path to a
 * buffered channel, which is how file systems without {@code O_DIRECT} (tmpfs) exercise it.
 *
 * <p><b>Ownership.</b> The device owns its file: {@link #open} takes an exclusive OS lock on it
 * ({@link LockedFile}) before it creates, extends or opens anything else, and holds it until
 * {@link #close}, so a second server or a writable tool on the same file fails at start with
 * "FILE is in use (locked by another process)" instead of both writing it. With
 * {@link Options#lockShared} (a tool that only reads, such as {@code thin check}) the lock is
 * shared and the file is opened read-only: writes through the device fail with IOERR.
 */
public final class FileDevice extends BlockDevice {

    /** Opening choices of a file device. */
    public record Options(boolean create, boolean direct, int ioTasks, int queueDepth, int bounceAlignment,
            boolean lockShared, boolean nativeHoles) {

        /** Checks the values, with the bad one in the message. */
        public Options {
            if (lockShared && create) {
                throw new IllegalArgumentException("file device: a shared (read-only) lock cannot create the file");
            }
            if (ioTasks < 1 || ioTasks > DeviceQueue.TASKS_MAX) {
                throw new IllegalArgumentException("file device: io tasks " + ioTasks + " not in [1, "
                        + DeviceQueue.TASKS_MAX + "]");
            }
            if (queueDepth < 1 || queueDepth > DeviceQueue.DEPTH_MAX) {
                throw new IllegalArgumentException("file device: queue depth " + queueDepth + " not in [1, "
                        + DeviceQueue.DEPTH_MAX + "]");
            }
            if (bounceAlignment != 0 && (bounceAlignment < Bio.SECTOR_SIZE || bounceAlignment > Page.SIZE
                    || Integer.bitCount(bounceAlignment) != 1)) {
                throw new IllegalArgumentException("file device: bounce alignment " + bounceAlignment
                        + " must be 0 or a power of two in " + Bio.SECTOR_SIZE + ".." + Page.SIZE);
            }
        }

        /** The five opening choices with an exclusive lock, holes from the file system where it tells them. */
        public Options(boolean create, boolean direct, int ioTasks, int queueDepth, int bounceAlignment) {
            this(create, direct, ioTasks, queueDepth, bounceAlignment, false, true);
        }

        /** Open an existing file, buffered, two I/O tasks, 32 requests in flight, exclusively locked. */
        public static Options defaults() {
            return new Options(false, false, 2, 32, 0);
        }

        /** Create the file sparse if it is missing, and extend it sparse if it is shorter. */
        public Options withCreate(boolean value) {
            return new Options(value, direct, ioTasks, queueDepth, bounceAlignment, lockShared, nativeHoles);
        }

        /** Open with {@code O_DIRECT}. */
        public Options withDirect(boolean value) {
            return new Options(create, value, ioTasks, queueDepth, bounceAlignment, lockShared, nativeHoles);
        }

        public Options withIoTasks(int value) {
            return new Options(create, direct, value, queueDepth, bounceAlignment, lockShared, nativeHoles);
        }

        public Options withQueueDepth(int value) {
            return new Options(create, direct, ioTasks, value, bounceAlignment, lockShared, nativeHoles);
        }

        /**
         * Take a shared lock and open the file read-only (a tool that only reads it); other readers
         * may hold it too, a writer may not.
         */
        public Options withLockShared(boolean value) {
            return new Options(create, direct, ioTasks, queueDepth, bounceAlignment, value, nativeHoles);
        }

        /**
         * Bounce segments not aligned to this many bytes even on a buffered channel (0: only under
         * direct I/O, where the file system's block size is used).
         */
        public Options withBounceAlignment(int value) {
            return new Options(create, direct, ioTasks, queueDepth, value, lockShared, nativeHoles);
        }

        /**
         * Ask the file system where the file's holes are and punch holes for discards ({@link
         * FileHoles}, Linux only); off, the device uses only the JDK: every range reads as
         * allocated, and discards write zeros where data is.
         */
        public Options withNativeHoles(boolean value) {
            return new Options(create, direct, ioTasks, queueDepth, bounceAlignment, lockShared, value);
        }
    }

    /**
     * Per I/O task state, allocated once: the segment cursor, a zero view of its own, and its own
     * channel on the file with a view array, so a bio of many pages moves in one vectored system
     * call (the shared channel has only positional single-buffer calls).
     */
    private static final class IoContext {
        final BioIter iter = new BioIter();
        final ByteBuffer zeros;
        final FileChannel cursor;
        final ByteBuffer[] views = new ByteBuffer[Bio.VECS_MAX];
        final MemorySegment errno;
        int segmentUsed;
        boolean haveSegment;
        /** Set by {@link #perform} when it held the bio by reference: the bio must not complete now. */
        boolean heldByReference;

        IoContext(ByteBuffer zeros, FileChannel cursor, MemorySegment errno) {
            this.zeros = zeros;
            this.cursor = cursor;
            this.errno = errno;
        }
    }

    private final Path path;
    private final Options options;
    private final LockedFile locked;
    private final PositionalFile file;
    private final FileHoles holes;
    /** The last run {@link #holes} said is data, so READs inside it ask nothing. */
    private final KnownDataRun knownData = new KnownDataRun();
    private final Arena errnoArena;
    private final int alignment;
    private final String ioFaultSite;
    private final String latencyFaultSite;
    private final Mempool<Page> bouncePool;
    private final Page zeroPage;
    private final IoContext[] contexts;
    private final AtomicLong bounces;
    private final AtomicLong ioErrors;
    private final AtomicLong again;
    private final AtomicLong punches;
    /**
     * Changes to the file (writes, punches, zeroing) finished so far, counted after each; it starts
     * at one, so the first flush forces whatever others left unflushed in the file before it opened.
     */
    private final AtomicLong changes = new AtomicLong(1);
    /** The count of {@link #changes} that the last completed force covers. */
    private final AtomicLong durableChanges = new AtomicLong();
    /** Kernel counter {@code file.flushes-skipped}: forces not made because nothing changed. */
    private final AtomicLong flushesSkipped;
    private final AtomicLong readReferences;
    /** READs held by reference to this file and not yet completed: the channel must stay open for them. */
    private final AtomicInteger heldNow = new AtomicInteger();
    private final WaitQueue referencesGone;
    private final Runnable referenceReleased = this::referenceReleased;
    private final AtomicLong directIssueCount;
    private final DeviceQueue<Bio> queue;
    /** Which operations a submitter may serve itself (policy {@code direct-issue}): READ, WRITE. */
    private final boolean directReads;
    private final boolean directWrites;

    private FileDevice(Kernel kernel, String name, long capacitySectors, QueueLimits limits, Path path,
            LockedFile locked, FileChannel channel, FileChannel[] cursors, FileHoles holes, Options options,
            int alignment) {
        super(kernel, name, capacitySectors, limits);
        this.path = path;
        this.options = options;
        this.locked = locked;
        this.file = new PositionalFile(channel);
        this.holes = holes;
        this.errnoArena = Arena.ofShared();
        this.alignment = alignment;
        this.ioFaultSite = "io:" + name;
        this.latencyFaultSite = "latency:" + name;
        this.bounces = kernel.counters().get("file.bounces");
        this.ioErrors = kernel.counters().get("file.io-errors");
        this.again = kernel.counters().get("file.again");
        this.punches = kernel.counters().get("file.punches");
        this.flushesSkipped = kernel.counters().get("file.flushes-skipped");
        this.readReferences = kernel.counters().get("file.read-references");
        this.referencesGone = new WaitQueue("file device " + name + " held references");
        this.directIssueCount = kernel.counters().get("file.direct-issues");
        PageAllocator pages = kernel.pages();
        this.bouncePool = new Mempool<>(kernel, name + "-bounce", options.ioTasks(), pages);
        // The device closes its own pool after its I/O tasks stop; the kernel must not close it first.
        kernel.unregister(bouncePool);
        this.zeroPage = pages.alloc(Gfp.KERNEL);
        if (zeroPage == null) {
            bouncePool.close();
            errnoArena.close();
            throw new IllegalStateException("file device " + name + ": no page for the zero buffer");
        }
        zeroPage.zero(0, Page.SIZE);
        // One context per I/O task, then one per direct lane (DeviceQueue makes as many lanes as tasks).
        this.contexts = new IoContext[2 * options.ioTasks()];
        for (int i = 0; i < contexts.length; i++) {
            contexts[i] = new IoContext(zeroPage.slice(0, Page.SIZE).asReadOnlyBuffer(), cursors[i],
                    holes.errnoBuffer(errnoArena));
        }
        String direct = kernel.policies().value(PolicySwitch.DIRECT_ISSUE);
        this.directReads = direct.equals("on") || direct.equals("reads");
        this.directWrites = direct.equals("on") || direct.equals("writes");
        DeviceQueue<Bio> ioQueue;
        try {
            ioQueue = new DeviceQueue<>(kernel, name, options.queueDepth(), options.ioTasks(), this::serve);
        } catch (RuntimeException e) {
            // Half built: give back what was taken; the caller closes the channel.
            bouncePool.close();
            pages.free(zeroPage);
            errnoArena.close();
            super.close();
            throw e;
        }
        this.queue = ioQueue;
    }

    /**
     * Opens (and with {@link Options#create} creates or extends, sparse) the file at {@code path}
     * as a device of {@code sizeBytes} bytes, and starts its I/O tasks.
     *
     * @param sizeBytes the device size, a positive multiple of the logical block size (512, or the
     *     file system's block size under direct I/O)
     * @throws IOException if the file cannot be opened, or {@code O_DIRECT} is not supported there
     * @throws LockedFile.FileInUseException if another process (or another device here) has it locked
     */
    public static FileDevice open(Kernel kernel, String name, Path path, long sizeBytes, Options options)
            throws IOException {
        if (sizeBytes <= 0 || sizeBytes % Bio.SECTOR_SIZE != 0) {
            throw new IllegalArgumentException("file device " + name + ": size " + sizeBytes
                    + " is not a positive multiple of " + Bio.SECTOR_SIZE);
        }
        int alignment = options.direct() ? directAlignment(path, options) : Math.max(1, options.bounceAlignment());
        if (alignment > 1 && sizeBytes % alignment != 0) {
            throw new IllegalArgumentException("file device " + name + ": size " + sizeBytes
                    + " is not a multiple of the I/O alignment " + alignment);
        }
        if (!Files.exists(path) && !options.create()) {
            throw new NoSuchFileException(path.toString(), null, "file device backing file is missing (create not set)");
        }
        // The lock first: nothing may create, extend or open the file for a second owner.
        LockedFile locked = options.lockShared() ? LockedFile.shared(path) : LockedFile.exclusive(path, options.create());
        FileChannel channel = null;
        FileChannel[] cursors = new FileChannel[2 * options.ioTasks()]; // I/O tasks, then direct lanes
        FileHoles holes = FileHoles.none();
        try {
            if (!options.lockShared()) {
                prepareFile(locked.file(), sizeBytes, options.create(), options.direct() ? alignment : 1);
            }
            channel = openChannel(path, options.direct(), options.lockShared());
            for (int i = 0; i < cursors.length; i++) {
                cursors[i] = openChannel(path, options.direct(), options.lockShared());
            }
            if (options.nativeHoles()) {
                holes = FileHoles.open(path, !options.lockShared());
            }
        } catch (IOException | RuntimeException e) {
            closeQuietly(channel, cursors, holes, locked);
            throw e;
        }
        QueueLimits limits = QueueLimits.defaults();
        if (alignment > 1) {
            limits = limits.withLogicalBlockSize(Math.max(Bio.SECTOR_SIZE, alignment)).withDmaAlignment(alignment);
        }
        try {
            return new FileDevice(kernel, name, sizeBytes >>> Bio.SECTOR_SHIFT, limits, path, locked, channel, cursors,
                    holes, options, alignment);
        } catch (RuntimeException e) {
            closeQuietly(channel, cursors, holes, locked);
            throw e;
        }
    }

    /**
     * Closes the shared channel and every per-task channel opened so far, then the lock (last: it
     * must outlive every other descriptor of the file), ignoring failures.
     */
    private static void closeQuietly(FileChannel channel, FileChannel[] cursors, FileHoles holes, LockedFile locked) {
        if (channel != null) {
            try {
                channel.close();
            } catch (IOException e) {
                // opening failed already; that error is the one to report
            }
        }
        for (FileChannel c : cursors) {
            if (c != null) {
                try {
                    c.close();
                } catch (IOException e) {
                    // as above
                }
            }
        }
        try {
            holes.close();
        } catch (RuntimeException e) {
            // as above
        }
        try {
            locked.close();
        } catch (IOException e) {
            // as above
        }
    }

    /** The direct I/O alignment: the file system's block size, or the option if that is unknown. */
    private static int directAlignment(Path path, Options options) throws IOException {
        Path existing = Files.exists(path) ? path : path.toAbsolutePath().getParent();
        long blockSize;
        try {
            blockSize = Files.getFileStore(existing).getBlockSize();
        } catch (UnsupportedOperationException e) {
            blockSize = options.bounceAlignment() != 0 ? options.bounceAlignment() : Page.SIZE;
        }
        if (blockSize < Bio.SECTOR_SIZE || blockSize > Page.SIZE || Long.bitCount(blockSize) != 1) {
            blockSize = Page.SIZE;
        }
        return Math.max((int) blockSize, options.bounceAlignment());
    }

    /**
     * Extends the (locked, so ours) file sparse as the options allow; rounds it up to the alignment.
     * Through the lock's own descriptor: closing another one would drop the lock.
     */
    private static void prepareFile(RandomAccessFile raf, long sizeBytes, boolean create, int alignment)
            throws IOException {
        long length = raf.length();
        if (create && length < sizeBytes) {
            raf.setLength(sizeBytes);
        } else if (length % alignment != 0) {
            // O_DIRECT cannot read the tail of a file that ends inside an aligned block.
            raf.setLength((length / alignment + 1) * alignment);
        }
    }

    /** Opens the channel for positional reads (and writes unless read-only), with {@code O_DIRECT} if asked. */
    private static FileChannel openChannel(Path path, boolean direct, boolean readOnly) throws IOException {
        OpenOption access = readOnly ? StandardOpenOption.READ : StandardOpenOption.WRITE;
        if (!direct) {
            return FileChannel.open(path, StandardOpenOption.READ, access);
        }
        OpenOption[] options = {StandardOpenOption.READ, access, directOption()};
        try {
            return FileChannel.open(path, options);
        } catch (UnsupportedOperationException e) {
            throw new IOException("O_DIRECT is not supported for " + path + ": " + e.getMessage(), e);
        }
    }

    /**
     * {@code com.sun.nio.file.ExtendedOpenOption.DIRECT}, looked up by name: the class lives in
     * {@code jdk.unsupported}, and naming it in source draws an internal-API warning from javac.
     */
    private static OpenOption directOption() throws IOException {
        try {
            Class<?> type = Class.forName("com.sun.nio.file.ExtendedOpenOption");
            for (Object constant : type.getEnumConstants()) {
                if (constant instanceof OpenOption option && "DIRECT".equals(constant.toString())) {
                    return option;
                }
            }
        } catch (ClassNotFoundException e) {
            throw new IOException("O_DIRECT is not available in this JDK: " + e.getMessage(), e);
        }
        throw new IOException("O_DIRECT is not available in this JDK: no ExtendedOpenOption.DIRECT");
    }

    // ---- submission ----------------------------------------------------------------------------

    /**
     * Serves the bio on this task if the queue is idle and the bio may be issued directly (see the
     * class comment); else queues it for an I/O task, waiting for a slot unless the bio is NOWAIT
     * (then AGAIN).
     */
    @Override
    protected void submitBio(Bio bio) {
        Bio front = splitToLimits(bio);
        if (mayIssueDirectly(front)) {
            int lane = queue.tryIssueDirectly();
            if (lane >= 0) {
                directIssueCount.incrementAndGet();
                try {
                    serve(front, contexts.length / 2 + lane);
                } finally {
                    queue.finishDirect(lane);
                }
                return;
            }
        }
        DeviceQueue.Admit admit = front.hasFlag(BioFlags.NOWAIT) ? queue.tryEnqueue(front) : queue.enqueue(front);
        switch (admit) {
            case QUEUED -> {
            }
            case FULL -> {
                again.incrementAndGet();
                front.setStatus(BioStatus.AGAIN);
                front.endio();
            }
            case STOPPED -> {
                front.setStatus(BioStatus.IOERR);
                front.endio();
            }
        }
    }

    /**
     * Whether the policy lets this bio be served by its submitter and that cannot block where the
     * rules forbid: a plain READ or WRITE with no bounce, no force, on a task that may block.
     */
    private boolean mayIssueDirectly(Bio bio) {
        boolean wanted = bio.op() == BioOp.READ ? directReads : bio.op() == BioOp.WRITE && directWrites;
        if (!wanted || alignment > 1 || bio.hasFlag(BioFlags.PREFLUSH) || bio.hasFlag(BioFlags.FUA)) {
            return false;
        }
        Task self = Task.currentOrNull();
        return self != null && self.mayBlock();
    }

    /** Requests served by their submitters (direct issue) since the device opened. */
    public long directIssues() {
        return queue.directIssues();
    }

    // ---- service on the device's I/O tasks and direct lanes ------------------------------------

    /**
     * Serves one bio with context {@code taskIndex} (an I/O task's, or a direct lane's after them)
     * and completes it on the calling task.
     */
    private void serve(Bio bio, int taskIndex) {
        BioStatus status;
        IoContext ctx = contexts[taskIndex];
        try {
            ctx.heldByReference = false;
            status = perform(bio, ctx);
            if (ctx.heldByReference) {
                return; // completes when its reference is released, after the payload was sent
            }
        } catch (IOException e) {
            status = BioStatus.IOERR;
        } catch (RuntimeException e) {
            // A bug, not an I/O error: report it, but still complete the bio so nobody waits forever.
            kernel().reportFault(Task.current(), e);
            status = BioStatus.IOERR;
        }
        if (status.isError()) {
            ioErrors.incrementAndGet();
            bio.setStatus(status);
        }
        bio.endio();
    }

    /** Does what the bio asks; returns its status. */
    private BioStatus perform(Bio bio, IoContext ctx) throws IOException {
        Faults faults = kernel().faults();
        if (faults.shouldFail(ioFaultSite)) {
            return BioStatus.IOERR;
        }
        long extraNanos = faults.extraLatencyNanos(latencyFaultSite);
        if (extraNanos > 0) {
            Task.current().sleepFor(extraNanos);
        }
        if (bio.hasFlag(BioFlags.PREFLUSH)) {
            forceIfChanged();
        }
        long position = bio.sector() << Bio.SECTOR_SHIFT;
        switch (bio.op()) {
            case READ -> {
                if (holdByReference(bio, position)) {
                    ctx.heldByReference = true;
                    return BioStatus.OK;
                }
                transfer(bio, ctx, position, false);
            }
            case FLUSH -> forceIfChanged();
            case WRITE, DISCARD, WRITE_ZEROES -> change(bio, position, ctx);
        }
        if (bio.hasFlag(BioFlags.FUA) && bio.op().isWrite() && bio.op() != BioOp.FLUSH) {
            forceIfChanged();
        }
        return BioStatus.OK;
    }

    /**
     * Hands a READ whose originator accepts references over as the extent (file, position, length)
     * instead of reading it (DESIGN.md section 4, "Reads by reference"); true if held. The bio stays
     * in flight until the reference is released after the send, so nothing may reuse the range
     * before the payload has left. Only buffered files give references: a direct file's reads must
     * go through aligned pages, and its data is not in the page cache that sendfile reads.
     */
    private boolean holdByReference(Bio bio, long position) {
        ReadReference reference = bio.readReference();
        if (reference == null) {
            return false;
        }
        heldNow.incrementAndGet(); // before the hold: its release may run on another task at once
        if (!readsByReference() || bio.hasFlag(BioFlags.PREFLUSH)
                || !reference.tryHold(bio, file.channel(), position, referenceReleased)) {
            referenceReleased();
            // This part takes pages, so the whole READ must: parts held elsewhere are read now.
            bio.refuseReadReference();
            return false;
        }
        readReferences.incrementAndGet();
        return true;
    }

    /** A held READ completed (atomic context): one reference less to this file. */
    private void referenceReleased() {
        if (heldNow.decrementAndGet() == 0) {
            referencesGone.wakeAll();
        }
    }

    /** A buffered file with no forced bounce alignment gives references. */
    @Override
    public boolean readsByReference() {
        return !options.direct() && alignment <= 1;
    }

    /** Moves a data bio's bytes: straight from its pages if aligned, else through a bounce page. */
    private void transfer(Bio bio, IoContext ctx, long position, boolean write) throws IOException {
        if (needsBounce(bio, ctx, position)) {
            bounce(bio, ctx, position, write);
            return;
        }
        BioIter iter = ctx.iter;
        ByteBuffer[] views = ctx.views;
        iter.reset(bio);
        int count = SegmentViews.fill(iter, views, 0);
        try {
            if (count == 1) {
                if (write) {
                    file.writeFully(views[0], position);
                } else {
                    file.readFully(views[0], position);
                }
            } else if (write) {
                file.writeFully(ctx.cursor, views, count, position);
            } else {
                file.readFully(ctx.cursor, views, count, position);
            }
        } finally {
            java.util.Arrays.fill(views, 0, count, null);
        }
    }

    /** Whether any segment's memory address or length, or the bio's position, breaks the alignment. */
    private boolean needsBounce(Bio bio, IoContext ctx, long position) {
        int align = alignment;
        if (align <= 1) {
            return false;
        }
        if (position % align != 0) {
            throw new IllegalStateException("file device " + name() + ": " + bio + " at byte " + position
                    + " passed the submit loop misaligned to " + align);
        }
        BioIter iter = ctx.iter;
        for (iter.reset(bio); iter.next(); ) {
            if (iter.page().buffer().alignmentOffset(iter.offset(), align) != 0 || iter.length() % align != 0) {
                return true;
            }
        }
        return false;
    }

    /**
     * Serves a misaligned data bio through one bounce page: window by window of at most 4 KiB (each
     * aligned, since the bio's position and size are), gather and write, or read and scatter.
     */
    private void bounce(Bio bio, IoContext ctx, long position, boolean write) throws IOException {
        Page page = bouncePool.alloc(Gfp.NOIO);
        if (page == null) {
            throw new IllegalStateException("file device " + name() + ": blocking bounce allocation returned null");
        }
        try {
            ctx.iter.reset(bio);
            ctx.haveSegment = false;
            int size = bio.sizeBytes();
            for (int done = 0; done < size; ) {
                int n = Math.min(Page.SIZE, size - done);
                ByteBuffer window = page.slice(0, n);
                if (write) {
                    copySegments(ctx, page, n, true);
                    file.writeFully(window, position + done);
                } else {
                    file.readFully(window, position + done);
                    copySegments(ctx, page, n, false);
                }
                bounces.incrementAndGet();
                done += n;
            }
        } finally {
            bouncePool.free(page);
        }
    }

    /** Copies the next {@code n} bytes of the bio into the bounce page ({@code gather}) or out of it. */
    private static void copySegments(IoContext ctx, Page bouncePage, int n, boolean gather) {
        BioIter iter = ctx.iter;
        for (int at = 0; at < n; ) {
            if (!ctx.haveSegment || ctx.segmentUsed == iter.length()) {
                if (!iter.next()) {
                    throw new IllegalStateException("bounce: bio segments end " + (n - at) + " bytes early");
                }
                ctx.haveSegment = true;
                ctx.segmentUsed = 0;
            }
            int k = Math.min(n - at, iter.length() - ctx.segmentUsed);
            if (gather) {
                bouncePage.copyFrom(at, iter.page(), iter.offset() + ctx.segmentUsed, k);
            } else {
                iter.page().copyFrom(iter.offset() + ctx.segmentUsed, bouncePage, at, k);
            }
            at += k;
            ctx.segmentUsed += k;
        }
    }

    /**
     * A WRITE, DISCARD or WRITE_ZEROES, counted as a change once it finished or failed (a failed
     * write may have changed part of its range), unless it found nothing to change.
     */
    private void change(Bio bio, long position, IoContext ctx) throws IOException {
        boolean changed = true;
        try {
            switch (bio.op()) {
                case WRITE -> transfer(bio, ctx, position, true);
                case WRITE_ZEROES -> {
                    if (bio.hasFlag(BioFlags.NOUNMAP)) {
                        zero(position, bio.sizeBytes(), ctx);
                    } else {
                        changed = discard(position, bio.sizeBytes(), ctx);
                    }
                }
                default -> changed = discard(position, bio.sizeBytes(), ctx);
            }
        } finally {
            if (changed) {
                changes.incrementAndGet();
            }
        }
    }

    /**
     * {@code force(false)} unless every change that finished so far is covered by a force that
     * completed. The count is read before the force begins, so a change that finishes during it
     * is left for the next one.
     */
    private void forceIfChanged() throws IOException {
        long seen = changes.get();
        if (seen == durableChanges.get()) {
            flushesSkipped.incrementAndGet();
            return;
        }
        file.force();
        durableChanges.accumulateAndGet(seen, Math::max);
    }

    /**
     * Makes a range read as zeros and gives its space back: a hole punched where the file system
     * can, else {@link #zero}. Within the file only: past its end the range reads as zeros already.
     * A range that is a hole already is left alone. Returns whether the file may have changed.
     */
    private boolean discard(long position, int length, IoContext ctx) throws IOException {
        long fileSize = file.size();
        if (length == 0 || position >= fileSize) {
            return false;
        }
        long punched = Math.min(length, fileSize - position);
        if (isHole(position, punched)) {
            return false;
        }
        if (holes.punch(position, punched, ctx.errno)) {
            knownData.punched();
            punches.incrementAndGet();
            return true;
        }
        zero(position, length, ctx);
        return true;
    }

    /** Whether the file system says {@code length} bytes at {@code position} (inside the file) are all hole. */
    private boolean isHole(long position, long length) {
        if (!holes.knowsHoles() || knownData.endOfDataAt(position) > 0) {
            return false;
        }
        return fileRun(position, position + length, knownData.epoch()) <= -length;
    }

    /** Makes a range read as zeros, using a bounce page as the read-back scratch. */
    private void zero(long position, int length, IoContext ctx) throws IOException {
        if (length == 0) {
            return;
        }
        Page page = bouncePool.alloc(Gfp.NOIO);
        if (page == null) {
            throw new IllegalStateException("file device " + name() + ": blocking scratch allocation returned null");
        }
        try {
            file.zeroRange(position, length, page.slice(0, Page.SIZE), ctx.zeros, Page.SIZE);
        } finally {
            bouncePool.free(page);
        }
    }

    // ---- holes ---------------------------------------------------------------------------------

    /** Whether the file system tells this file's holes (see {@link FileHoles}). */
    @Override
    public boolean knowsAllocation() {
        return holes.knowsHoles();
    }

    /**
     * The run of data (positive) or hole (negative) sectors at {@code sector}, at most
     * {@code maxSectors}, from the file system; past the end of the file is a hole. A partly
     * written sector counts as data. A file system that cannot say makes the run allocated.
     * Does not block on anything but {@code lseek} and {@code fstat}, and asks neither inside the
     * last data run it found ({@link KnownDataRun}).
     */
    @Override
    public long allocatedExtent(long sector, long maxSectors) {
        long run = super.allocatedExtent(sector, maxSectors);
        if (!holes.knowsHoles()) {
            return run;
        }
        long position = sector << Bio.SECTOR_SHIFT;
        long end = (sector + run) << Bio.SECTOR_SHIFT;
        long known = knownData.endOfDataAt(position);
        if (known > 0) {
            return dataRun(position, Math.min(known, end));
        }
        long asked = knownData.epoch();
        long fileSize;
        try {
            fileSize = file.size();
        } catch (IOException e) {
            return run;
        }
        if (position >= fileSize) {
            return -run;
        }
        long bytes = fileRun(position, end, asked);
        if (bytes == 0) {
            return run;
        }
        if (bytes > 0) {
            return dataRun(position, position + bytes);
        }
        long sectors = -bytes >>> Bio.SECTOR_SHIFT;
        return sectors == 0 ? 1 : -sectors;
    }

    /**
     * The run at byte {@code position} (inside the file) up to {@code end}, as the file system
     * tells it: positive bytes of data (remembered in {@link #knownData}, found in punch epoch
     * {@code asked}, read before this asks), negative bytes of hole, or 0 if it cannot say.
     */
    private long fileRun(long position, long end, long asked) {
        long hole = holes.nextHole(position);
        if (hole < 0) {
            return 0;
        }
        if (hole > position) {
            knownData.remember(position, hole, asked);
            return Math.min(hole, end) - position;
        }
        long data = holes.nextData(position);
        return position - (data < 0 ? end : Math.min(data, end));
    }

    /** The sectors of a data run from byte {@code position} to {@code dataEnd}; a partly written sector counts. */
    private static long dataRun(long position, long dataEnd) {
        return (dataEnd - position + Bio.SECTOR_SIZE - 1) >>> Bio.SECTOR_SHIFT;
    }

    // ---- control -------------------------------------------------------------------------------

    /** The backing file. */
    public Path path() {
        return path;
    }

    /** Bytes to which direct (or forced-bounce) I/O must be aligned; 1 for none. */
    public int alignment() {
        return alignment;
    }

    /** Whether the channel was opened with {@code O_DIRECT}. */
    public boolean isDirect() {
        return options.direct();
    }

    /** Bios admitted and not yet completed. */
    public int inFlight() {
        return queue.inFlight();
    }

    @Override
    public String describeState() {
        return "file device " + name() + " (" + path + (options.direct() ? ", direct" : "") + "): "
                + queue.describeState() + "; " + heldNow.get() + " READ(s) held by reference; " + bouncePool.describeState();
    }

    @Override
    public long fingerprint() {
        return queue.served() * 31 + queue.inFlight();
    }

    /**
     * Stops the I/O tasks after they completed every admitted bio, waits until no READ is held by
     * reference to the file (each hold ends when its payload was sent or its connection was cut),
     * returns the bounce pages and the zero page, closes the channel, then closes the device's
     * split set.
     */
    @Override
    public void close() {
        if (isClosed()) {
            return;
        }
        RuntimeException failure = null;
        try {
            queue.stop();
        } catch (RuntimeException e) {
            failure = e;
        }
        // A READ held by reference is sent from this file's channel: it must stay open until the
        // last one completed. Each ends (sent, or its connection cut by the reply timeout).
        referencesGone.waitEvent(() -> heldNow.get() == 0, this);
        try {
            bouncePool.close();
        } catch (RuntimeException e) {
            failure = addFailure(failure, e);
        }
        kernel().pages().free(zeroPage);
        for (IoContext ctx : contexts) {
            try {
                ctx.cursor.close();
            } catch (IOException e) {
                failure = addFailure(failure, new IllegalStateException("file device " + name() + ": closing a task channel of "
                        + path + " failed: " + e.getMessage(), e));
            }
        }
        try {
            holes.close();
        } catch (RuntimeException e) {
            failure = addFailure(failure, e);
        }
        errnoArena.close();
        try {
            file.channel().close();
        } catch (IOException e) {
            failure = addFailure(failure, new IllegalStateException("file device " + name() + ": closing " + path
                    + " failed: " + e.getMessage(), e));
        }
        try {
            locked.close(); // last: the lock must outlive every other descriptor of the file
        } catch (IOException e) {
            failure = addFailure(failure, new IllegalStateException("file device " + name() + ": releasing the lock on "
                    + path + " failed: " + e.getMessage(), e));
        }
        try {
            super.close();
        } catch (RuntimeException e) {
            failure = addFailure(failure, e);
        }
        if (failure != null) {
            throw failure;
        }
    }

    private static RuntimeException addFailure(RuntimeException first, RuntimeException next) {
        if (first == null) {
            return next;
        }
        first.addSuppressed(next);
        return first;
    }
}
