package io.blkstack.bio;

import io.blkstack.kernel.SpinLock;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;

/**
 * One READ's offer to be completed with references to file extents instead of filled pages
 * (DESIGN.md section 4, "Reads by reference"), and the extents it collected.
 *
 * <p><b>Who does what.</b> The originator (the NBD server) {@link #arm arms} one of these for a
 * READ bio it allocated with pages and {@link Bio#offerReadReference offers} it on the bio. Clones
 * and splits inherit the offer, so remap-only targets (linear, striped) pass it down with the
 * remapped range and need no code. A target or table that must see the data
 * {@link Bio#refuseReadReference refuses} it. A file device that gets a READ carrying the offer
 * calls {@link #tryHold}: it records (file, position, length) and does NOT complete the bio. When
 * every byte of the READ is held, the owner is told ({@link Owner#referencesReady}); it sends the
 * extents (sendfile) and then {@link #release releases} them, which completes the held bios, so
 * their completion and every target's end-io above them run only after the payload has left.
 *
 * <p><b>Why the hold is the whole safety argument.</b> The bytes are taken from the file when they
 * are sent, not when the device "completes". Every mechanism that must not change a range while I/O
 * on it is in flight (thin block reuse after a discard, snapshot exceptions, suspend) waits for the
 * bios' completion; since that completion runs after the send, they wait for the send too, with no
 * code of their own. Every hold ends: the owner releases after the send, and on a broken connection
 * (the reply timeout cuts one that never reads) it releases without sending.
 *
 * <p><b>When pages are allocated.</b> Before submission, always: the bio carries its pages even
 * when it is offered by reference. Any layer may refuse on the way down (a table reloaded with a
 * transforming target between the originator's check and the map, crypt, flakey), and a refused
 * READ must be filled into pages at once, from a map call that may not wait for memory the
 * originator's budget guards. Allocating later would need a second allocation on the I/O path
 * (rule 1 of DESIGN.md section 1). So a referenced read saves the two copies (file to page, page to
 * socket) and their cache traffic, not the arena pages; charging fewer pages is future work.
 *
 * <p><b>Refusal after holds.</b> If a refusal comes after some parts were already held (only a
 * reload race inside a stack can cause it, since the originator offers only to stacks that pass
 * references through), the held parts are read into their pages right there, from the refusing
 * task (which runs in process context), and completed; later parts get pages; the READ then
 * completes and replies from pages as today. So no READ ever mixes references with pages.
 *
 * <p><b>Errors.</b> A part that completes with an error {@link #abort aborts} the offer: the READ
 * fails anyway, so the held parts complete at once with an error rather than wait for a send. A
 * bio whose end-io recovers by retrying the range elsewhere (mirror's leg clones) is marked
 * {@link Bio#markRetriedOnError}: its error does not abort, and the retry may still be held.
 *
 * <p>Bounded: at most {@link #EXTENTS_MAX} extents; a bottom bio beyond that gets pages (and
 * refuses, as above). One object per bio slot of the originator, reused.
 */
public final class ReadReference {

    /**
     * Most extents one READ collects: a 1 MiB read over linear targets needs one per target it
     * crosses, striped in 64 KiB chunks 16. A READ that needs more gets pages (refused, as above).
     */
    public static final int EXTENTS_MAX = 64;

    /** Told when every byte of the READ is held by reference (atomic context: never blocks). */
    public interface Owner {
        void referencesReady(ReadReference reference);
    }

    private enum State { IDLE, COLLECTING, READY, REFUSED, RELEASED }

    private final SpinLock lock = new SpinLock("read reference");
    private final FileChannel[] channels = new FileChannel[EXTENTS_MAX];
    private final long[] positions = new long[EXTENTS_MAX];
    private final int[] lengths = new int[EXTENTS_MAX];
    private final int[] payloadOffsets = new int[EXTENTS_MAX];
    private final Bio[] held = new Bio[EXTENTS_MAX];
    /** Told after each held bio completed: the file it referenced is no longer needed for it. */
    private final Runnable[] releasedHooks = new Runnable[EXTENTS_MAX];

    private State state = State.IDLE;
    private BioVec[] vecs;
    private int payloadBytes;
    private int heldBytes;
    private int count;
    private Owner owner;
    private Object ownerData;
    /** Whether the owner was told (so the READ's own completion must not count again). */
    private volatile boolean ownerTold;

    /** Readies this for {@code top}, a READ with its own pages not yet submitted; the owner then offers it. */
    public void arm(Bio top, Owner readyOwner, Object data) {
        if (state != State.IDLE && state != State.RELEASED && state != State.REFUSED) {
            throw new IllegalStateException("read reference armed again while " + state + " with " + count + " extent(s)");
        }
        if (count != 0) {
            throw new IllegalStateException("read reference re-armed with " + count + " extent(s) still held");
        }
        vecs = top.vecs();
        payloadBytes = top.sizeBytes();
        heldBytes = 0;
        owner = readyOwner;
        ownerData = data;
        ownerTold = false;
        state = State.COLLECTING;
        top.offerReadReference(this);
    }

    /** The owner's data given to {@link #arm}. */
    public Object ownerData() {
        return ownerData;
    }

    /**
     * Holds {@code bio} (a READ at the bottom of the stack) as the extent {@code position} of
     * {@code channel}: the caller must then not complete it; it completes when released. False if
     * this READ takes pages (refused, full, or not this READ's pages): fill them and complete as usual.
     */
    public boolean tryHold(Bio bio, FileChannel channel, long position) {
        return tryHold(bio, channel, position, NOTHING);
    }

    private static final Runnable NOTHING = () -> { };

    /**
     * {@link #tryHold(Bio, FileChannel, long)}, and runs {@code released} (atomic context: it must
     * not block) right after the held bio completed, however its hold ends: the file device counts
     * its holds with it so that closing the file waits until no reference to it is left.
     */
    public boolean tryHold(Bio bio, FileChannel channel, long position, Runnable released) {
        int length = bio.sizeBytes();
        if (bio.op() != BioOp.READ || length == 0) {
            return false;
        }
        boolean ready;
        lock.lock();
        try {
            if (state != State.COLLECTING || bio.vecs() != vecs || count == EXTENTS_MAX) {
                return false;
            }
            int offset = payloadOffset(bio);
            if (offset + (long) length > payloadBytes || heldBytes + length > payloadBytes) {
                throw new IllegalStateException("read reference of " + payloadBytes + " bytes: " + bio + " at payload offset "
                        + offset + " overruns it (" + heldBytes + " held)");
            }
            channels[count] = channel;
            positions[count] = position;
            lengths[count] = length;
            payloadOffsets[count] = offset;
            held[count] = bio;
            releasedHooks[count] = released;
            count++;
            heldBytes += length;
            ready = heldBytes == payloadBytes;
            if (ready) {
                state = State.READY;
                ownerTold = true;
                sortByPayloadOffset();
            }
        } finally {
            lock.unlock();
        }
        if (ready) {
            owner.referencesReady(this);
        }
        return true;
    }

    /** Where {@code bio}'s range starts in the READ's payload: the bytes of the shared vec array before its iterator. */
    private static int payloadOffset(Bio bio) {
        BioVec[] v = bio.vecs();
        int offset = bio.iterBvecDone();
        for (int i = 0; i < bio.iterIndex(); i++) {
            offset += v[i].length();
        }
        return offset;
    }

    /** Sorts the extents by payload offset (insertion sort: few, mostly in order already). */
    private void sortByPayloadOffset() {
        for (int i = 1; i < count; i++) {
            for (int j = i; j > 0 && payloadOffsets[j - 1] > payloadOffsets[j]; j--) {
                swap(j - 1, j);
            }
        }
        int expected = 0;
        for (int i = 0; i < count; i++) {
            if (payloadOffsets[i] != expected) {
                throw new IllegalStateException("read reference extents leave a gap or overlap at payload offset " + expected);
            }
            expected += lengths[i];
        }
    }

    private void swap(int a, int b) {
        FileChannel c = channels[a];
        channels[a] = channels[b];
        channels[b] = c;
        long p = positions[a];
        positions[a] = positions[b];
        positions[b] = p;
        int l = lengths[a];
        lengths[a] = lengths[b];
        lengths[b] = l;
        int o = payloadOffsets[a];
        payloadOffsets[a] = payloadOffsets[b];
        payloadOffsets[b] = o;
        Bio h = held[a];
        held[a] = held[b];
        held[b] = h;
        Runnable r = releasedHooks[a];
        releasedHooks[a] = releasedHooks[b];
        releasedHooks[b] = r;
    }

    /** Whether every byte is held and the owner may send the extents. */
    public boolean isReady() {
        return ownerTold && state == State.READY;
    }

    /** Whether the owner was told of readiness (the READ's own completion is then not news). */
    public boolean ownerTold() {
        return ownerTold;
    }

    /** The READ's payload size in bytes. */
    public int payloadBytes() {
        return payloadBytes;
    }

    /** Extents held, in payload order once ready. */
    public int extentCount() {
        return count;
    }

    public FileChannel channel(int extent) {
        return channels[extent];
    }

    public long position(int extent) {
        return positions[extent];
    }

    public int length(int extent) {
        return lengths[extent];
    }

    /**
     * Ends every hold: completes the held bios (their end-io runs here, up the stack), after the
     * payload was sent or when it never will be (then each completes with {@code status}).
     */
    public void release(BioStatus status) {
        int n;
        lock.lock();
        try {
            if (state == State.COLLECTING || state == State.READY) {
                state = State.RELEASED;
            }
            n = count;
            count = 0;
        } finally {
            lock.unlock();
        }
        completeHeld(n, status);
    }

    /**
     * The refusal ({@link Bio#refuseReadReference}): no more holds; parts already held are read
     * into their pages now (this task is in process context: a map call) and completed.
     */
    void refuse() {
        int n;
        lock.lock();
        try {
            if (state != State.COLLECTING) {
                return;
            }
            state = State.REFUSED;
            n = count;
            count = 0;
        } finally {
            lock.unlock();
        }
        for (int i = 0; i < n; i++) {
            Bio bio = held[i];
            if (!readIntoPages(bio, channels[i], positions[i])) {
                bio.setStatus(BioStatus.IOERR);
            }
        }
        completeHeld(n, BioStatus.OK);
    }

    /**
     * A part of the READ failed (its bio completes with an error, {@link Bio#endio}): the READ
     * fails, so the parts already held complete now with an error instead of waiting for a send
     * that will not come; later parts get pages. Never blocks (it runs in completion context).
     */
    void abort() {
        int n;
        lock.lock();
        try {
            if (state != State.COLLECTING) {
                return;
            }
            state = State.REFUSED;
            n = count;
            count = 0;
        } finally {
            lock.unlock();
        }
        completeHeld(n, BioStatus.IOERR);
    }

    private void completeHeld(int n, BioStatus status) {
        for (int i = 0; i < n; i++) {
            Bio bio = held[i];
            Runnable released = releasedHooks[i];
            held[i] = null;
            channels[i] = null;
            releasedHooks[i] = null;
            bio.setStatus(status);
            bio.endio();
            released.run();
        }
    }

    /** Reads a held bio's range into its pages (positional reads; zeroes past the end of the file). */
    private static boolean readIntoPages(Bio bio, FileChannel channel, long position) {
        BioVec[] v = bio.vecs();
        int idx = bio.iterIndex();
        int done = bio.iterBvecDone();
        int left = bio.sizeBytes();
        long pos = position;
        try {
            while (left > 0) {
                BioVec vec = v[idx];
                int n = Math.min(vec.length() - done, left);
                ByteBuffer view = vec.page().slice(vec.offset() + done, n);
                while (view.hasRemaining()) {
                    int got = channel.read(view, pos + view.position());
                    if (got < 0) {
                        vec.page().zero(vec.offset() + done + view.position(), view.remaining());
                        break;
                    }
                }
                pos += n;
                left -= n;
                idx++;
                done = 0;
            }
            return true;
        } catch (IOException e) {
            return false;
        }
    }

    @Override
    public String toString() {
        return "read reference " + state + " " + heldBytes + "/" + payloadBytes + " bytes in " + count + " extent(s)";
    }

}
