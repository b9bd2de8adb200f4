package io.blkstack.dm;

/** Builds a target from its table arguments (the kernel's {@code ctr}); registered by type name. */
@FunctionalInterface
public interface TargetFactory {

    /** Parses {@code args} strictly and builds the target, or throws naming the bad argument. */
    Target create(TargetArgs args) throws TableException;
}
