package io.blkstack.block;

import io.blkstack.bio.Bio;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.SpinLock;
import io.blkstack.kernel.WaitQueue;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.List;

/**
 * A test device that holds every bio it is given (without touching its data) until the test
 * completes it, oldest first, or opens it for good: a deterministic way to keep I/O in flight
 * exactly as long as a test needs, without sleeps. {@link #awaitHeld} waits with the kernel's wait
 * queue until bios have arrived.
 */
public final class HoldingDevice extends BlockDevice {

    private final SpinLock lock = new SpinLock("holding device");
    private final WaitQueue arrived = new WaitQueue("holding device arrivals");
    private final ArrayDeque<Bio> held = new ArrayDeque<>();
    private volatile boolean holding;

    /** A device of {@code sectors} that holds bios from the start if {@code holding}, else passes them. */
    public HoldingDevice(Kernel kernel, String name, long sectors, boolean holding) {
        super(kernel, name, sectors, QueueLimits.defaults());
        this.holding = holding;
    }

    @Override
    protected void submitBio(Bio bio) {
        bio = splitToLimits(bio);
        lock.lock();
        boolean hold = holding;
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

    /** From now on holds every bio. */
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
