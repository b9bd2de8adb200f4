package io.blkstack.dm;

import io.blkstack.bio.Bio;

/**
 * The per-clone state of a mapped device (the kernel's {@code dm_target_io}): which original the
 * clone belongs to, which target maps it, which flush bio of that target it is, and a few slots
 * for the target's own per-bio data.
 *
 * <p>One instance is created for each bio object of the mapped device's bio set, by the set's
 * front-pad supplier, and is reused for every I/O that bio object carries: so {@link Target#map}
 * allocates nothing. A target's per-bio data object ({@link Target#newPerBioData}) is created the
 * first time a bio object is mapped by a target of that class and reused afterwards, like the
 * kernel's {@code per_io_data_size} bytes in the front pad.
 */
public final class TargetIo {

    /** Target classes whose per-bio data one bio object keeps. */
    static final int DATA_SLOTS = 4;

    Bio original;
    Target target;
    int bioNumber;
    long fragmentSector;
    int fragmentBytes;
    boolean flushParent;
    boolean counted;

    private final Class<?>[] dataOwners = new Class<?>[DATA_SLOTS];
    private final Object[] data = new Object[DATA_SLOTS];
    private int nextVictim;

    /** Readies the state for a new clone. */
    void reset(Bio originalBio, Target mapper, int number) {
        this.original = originalBio;
        this.target = mapper;
        this.bioNumber = number;
        this.flushParent = false;
        this.counted = false;
    }

    /** The target mapping the clone. */
    public Target target() {
        return target;
    }

    /**
     * Which of the target's {@link Target#flushBioCount} flush clones this is (the kernel's
     * {@code target_bio_nr}); 0 for data bios.
     */
    public int bioNumber() {
        return bioNumber;
    }

    /**
     * The target's per-bio data object for this bio object, created once by
     * {@link Target#newPerBioData} and reused for every later I/O.
     */
    @SuppressWarnings("unchecked")
    public <T> T perBioData() {
        Target t = target;
        if (t == null) {
            throw new IllegalStateException("per-bio data of a clone that no target maps");
        }
        Class<?> owner = t.getClass();
        for (int i = 0; i < DATA_SLOTS; i++) {
            if (dataOwners[i] == owner) {
                return (T) data[i];
            }
        }
        Object created = t.newPerBioData();
        if (created == null) {
            throw new IllegalStateException("target " + t.type() + " asked for per-bio data but newPerBioData returned null");
        }
        int slot = nextVictim;
        nextVictim = (nextVictim + 1) % DATA_SLOTS;
        dataOwners[slot] = owner;
        data[slot] = created;
        return (T) created;
    }
}
