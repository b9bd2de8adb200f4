package io.blkstack.kernel;

/**
 * Receives kernel events for traces and the checker's "last events". Callers check
 * {@link #enabled} first, so a disabled tracer costs one branch.
 */
public interface Tracer {

    /** Records nothing. */
    Tracer NONE = new Tracer() {
        @Override
        public boolean enabled() {
            return false;
        }

        @Override
        public void event(Task task, String type, String detail) {
        }
    };

    /** Whether events should be built and recorded at all. */
    boolean enabled();

    /** Records one event of {@code task} (null for timer or device context). */
    void event(Task task, String type, String detail);
}
