package io.blkstack.block;

import io.blkstack.bio.Bio;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.SpinLock;
import io.blkstack.kernel.WaitQueue;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.List;
import java.util.function.Predicate;

/**
 * A test device that holds every bio it is given, or only those a filter picks (without touching
 * their data), until the test completes them, oldest first, or opens the device for good: a
 * deterministic way to keep I/O in flight exactly as long as a test needs, without sleeps. {@link #awaitHeld} waits with the kernel's wait
 * queue until bios have arrived.
 */
public final class HoldingDevice extends BlockDevice {

    private final SpinLock lock = new SpinLock("holding device");
    private final WaitQueue arrived = new WaitQueue("holding device arrivals");
    private final ArrayDeque<Bio> held = new ArrayDeque<>();
    private final Predicate<Bio> which;
    private volatile boolean holding;

    /** A device of {@code sectors} that holds bios from the start if {@code holding}, else passes them. */
    public HoldingDevice(Kernel kernel, String name, long sectors, boolean holding) {
        this(kernel, name, sectors, holding, bio -> true);
    }

    /**
     * The same, holding only the bios {@code which} accepts (asked once per bio, on the submitting
     * task); the others complete at once.
     */
    public HoldingDevice(Kernel kernel, String name, long sectors, boolean holding, Predicate<Bio> which) {
        super(kernel, name, sectors, QueueLimits.defaults());
        this.holding = holding;
        this.which = which;
    }

    @Override
    protected void submitBio(Bio bio) {
        bio = splitToLimits(bio);
        boolean picked = which.test(bio);
        lock.lock();
        boolean hold = picked && holding;
        if (hold) {
            held.add(bio);
        }
        lock.unlock();
        if (hold) {
            arrived.wakeAll();
        } else {
            bio.endio();
        }
    }

    /** From now on holds every bio (that the filter picks). */
    public void hold() {
        holding = true;
    }

    /** Bios held now. */
    public int heldCount() {
        lock.lock();
        try {
            return held.size();
        } finally {
            lock.unlock();
        }
    }

    /** Waits until at least {@code n} bios are held. */
    public void awaitHeld(int n) {
        arrived.waitEvent(() -> heldCount() >= n, "holding device: " + n + " held bio(s)");
    }

    /** Completes the oldest held bio. */
    public void releaseOne() {
        lock.lock();
        Bio bio = held.poll();
        lock.unlock();
        if (bio == null) {
            throw new IllegalStateException("holding device " + name() + " holds no bio");
        }
        bio.endio();
    }

    /** Completes every bio held now; later ones are held as before. */
    public void releaseAll() {
        release(false);
    }

    /** Completes every bio held now and lets every later bio through. */
    public void openAll() {
        release(true);
    }

    private void release(boolean open) {
        List<Bio> all;
        lock.lock();
        if (open) {
            holding = false;
        }
        all = new ArrayList<>(held);
        held.clear();
        lock.unlock();
        all.forEach(Bio::endio);
    }
}
