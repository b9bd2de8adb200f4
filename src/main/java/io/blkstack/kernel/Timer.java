package io.blkstack.kernel;

/** A pending timer callback; {@link #cancel} stops it if it has not fired. */
public interface Timer {

    /** Stops the timer; returns true if it had not fired yet. */
    boolean cancel();
}
