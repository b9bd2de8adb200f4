package io.blkstack.kernel;

/**
 * One teardown path that copes with half-built objects and failing steps: every resource is
 * closed in order even when an earlier one fails; the first failure is thrown at the end with
 * the later ones suppressed. Null resources (never built) are skipped.
 */
public final class Teardown {

    private RuntimeException failure;

    /** Closes each resource in order, then throws the first failure, if any. */
    public static void closeAll(AutoCloseable... resources) {
        Teardown teardown = new Teardown();
        for (AutoCloseable r : resources) {
            teardown.close(r);
        }
        teardown.finish();
    }

    /** Closes one resource, remembering a failure instead of throwing it; null is skipped. */
    public Teardown close(AutoCloseable resource) {
        if (resource == null) {
            return this;
        }
        try {
            resource.close();
        } catch (Exception e) {
            add(e);
        }
        return this;
    }

    /** Remembers a failure: the first is thrown by {@link #finish}, later ones are suppressed in it. */
    public void add(Exception e) {
        if (failure == null) {
            failure = e instanceof RuntimeException r ? r : new IllegalStateException(e);
        } else {
            failure.addSuppressed(e);
        }
    }

    /** Whether a step failed so far. */
    public boolean failed() {
        return failure != null;
    }

    /** Throws the first failure, if any. */
    public void finish() {
        if (failure != null) {
            throw failure;
        }
    }
}
