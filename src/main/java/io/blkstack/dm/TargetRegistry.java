package io.blkstack.dm;

import io.blkstack.dm.crypt.CryptTarget;
import io.blkstack.dm.simple.DelayTarget;
import io.blkstack.dm.simple.ErrorTarget;
import io.blkstack.dm.simple.FlakeyTarget;
import io.blkstack.dm.simple.LinearTarget;
import io.blkstack.dm.logwrites.LogWritesTarget;
import io.blkstack.dm.snapshot.SnapshotOriginTarget;
import io.blkstack.dm.snapshot.SnapshotTarget;
import io.blkstack.dm.mirror.MirrorTarget;
import io.blkstack.dm.simple.StripedTarget;
import io.blkstack.dm.thin.ThinPoolTarget;
import io.blkstack.dm.thin.ThinTarget;
import io.blkstack.dm.simple.ZeroTarget;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.KernelSlot;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;

/**
 * Target type name to factory (the kernel's {@code dm_register_target} list). Each kernel has its
 * own ({@link #of}), holding the built-in targets from the start; another target registers the
 * same way ({@code TargetRegistry.of(kernel).register("mine", MyTarget::new)}) and exists in that
 * kernel only. Tests may build a free-standing registry with {@link #withDefaults()}.
 */
public final class TargetRegistry {

    private static final KernelSlot<TargetRegistry> SLOT = KernelSlot.of("target types", k -> withDefaults());

    private final Map<String, TargetFactory> factories = new ConcurrentHashMap<>();

    /** An empty registry. */
    public TargetRegistry() {
    }

    /** A new registry holding the built-in targets. */
    public static TargetRegistry withDefaults() {
        TargetRegistry r = new TargetRegistry();
        r.register(LinearTarget.TYPE, LinearTarget::new);
        r.register(StripedTarget.TYPE, StripedTarget::new);
        r.register(ZeroTarget.TYPE, ZeroTarget::new);
        r.register(ErrorTarget.TYPE, ErrorTarget::new);
        r.register(SnapshotOriginTarget.TYPE, SnapshotOriginTarget::new);
        r.register(SnapshotTarget.TYPE, SnapshotTarget::new);
        r.register(MirrorTarget.TYPE, MirrorTarget::new);
        r.register(CryptTarget.TYPE, CryptTarget::new);
        r.register(DelayTarget.TYPE, DelayTarget::new);
        r.register(FlakeyTarget.TYPE, FlakeyTarget::new);
        r.register(LogWritesTarget.TYPE, LogWritesTarget::new);
        r.register(ThinPoolTarget.TYPE, ThinPoolTarget::new);
        r.register(ThinTarget.TYPE, ThinTarget::new);
        return r;
    }

    /** The registry of {@code kernel}: what its tables use unless given another. */
    public static TargetRegistry of(Kernel kernel) {
        return kernel.state(SLOT);
    }

    /** Registers {@code factory} under {@code type}; a name registered twice is a caller error. */
    public void register(String type, TargetFactory factory) {
        if (type == null || type.isEmpty() || type.chars().anyMatch(Character::isWhitespace)) {
            throw new IllegalArgumentException("target type name '" + type + "' must be one non-empty word");
        }
        if (factories.putIfAbsent(type, factory) != null) {
            throw new IllegalArgumentException("target type '" + type + "' is already registered");
        }
    }

    /** The factory for {@code type}, or null. */
    public TargetFactory find(String type) {
        return factories.get(type);
    }

    /** The registered type names, sorted. */
    public List<String> types() {
        return List.copyOf(new TreeMap<>(factories).keySet());
    }
}
