// Command volumes gives the test control plane the two storage controllers a
// real cluster gets from its CSI driver's sidecars: a provisioner, so that a
// claim of the "standard" StorageClass binds to a new volume (a directory under
// --root), and a resizer, so that a claim grown by its user gets the larger
// capacity, as external-resizer and the kubelet report it once a volume grew.
//
// Provisioning is sig-storage-lib-external-provisioner's controller, the library
// that out-of-tree provisioners are built on; only the volume itself (a
// directory) is ours.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller"
)

// Provisioner is the name StorageClasses give in their provisioner field.
const Provisioner = "visitcounter.dev/local-volumes"

type directories struct{ root string }

func (d directories) Provision(_ context.Context, opts controller.ProvisionOptions) (*corev1.PersistentVolume, controller.ProvisioningState, error) {
	path := filepath.Join(d.root, opts.PVName)
	mode, err := directoryMode(opts.StorageClass.Parameters)
	if err != nil {
		return nil, controller.ProvisioningFinished, err
	}
	if err := os.MkdirAll(path, mode); err != nil {
		return nil, controller.ProvisioningFinished, fmt.Errorf("creating the volume's directory: %w", err)
	}
	// MkdirAll's mode passes through the umask.
	if err := os.Chmod(path, mode); err != nil {
		return nil, controller.ProvisioningFinished, fmt.Errorf("setting the volume directory's mode: %w", err)
	}
	hostPath := corev1.HostPathDirectory
	reclaim := corev1.PersistentVolumeReclaimDelete
	if opts.StorageClass.ReclaimPolicy != nil {
		reclaim = *opts.StorageClass.ReclaimPolicy
	}
	return &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: opts.PVName},
		Spec: corev1.PersistentVolumeSpec{
			PersistentVolumeReclaimPolicy: reclaim,
			AccessModes:                   opts.PVC.Spec.AccessModes,
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: opts.PVC.Spec.Resources.Requests[corev1.ResourceStorage]},
			PersistentVolumeSource: corev1.PersistentVolumeSource{
				HostPath: &corev1.HostPathVolumeSource{Path: path, Type: &hostPath},
			},
		},
	}, controller.ProvisioningFinished, nil
}

// directoryMode is the mode of a new volume's directory: 0777, as kind's
// local-path provisioner makes them, so a pod of any user can write it (a
// kubelet applies no fsGroup to hostPath volumes); or the StorageClass's
// "mode" parameter, in octal ("0755" gives root-owned directories others
// cannot write).
func directoryMode(parameters map[string]string) (os.FileMode, error) {
	text, ok := parameters["mode"]
	if !ok {
		return 0o777, nil
	}
	mode, err := strconv.ParseUint(text, 8, 32)
	if err != nil || mode > 0o777 {
		return 0, fmt.Errorf("the StorageClass parameter mode %q is not an octal file mode such as 0755", text)
	}
	return os.FileMode(mode), nil
}

func (d directories) Delete(_ context.Context, pv *corev1.PersistentVolume) error {
	if pv.Spec.HostPath == nil {
		return nil
	}
	return os.RemoveAll(pv.Spec.HostPath.Path)
}

// resize gives a bound claim of our class the capacity it asks for: first the
// volume, then the claim's status, which is the order external-resizer and
// the kubelet follow, so that a claim never reports more than its volume has.
func resize(ctx context.Context, client kubernetes.Interface, classes map[string]bool, pvc *corev1.PersistentVolumeClaim) error {
	if pvc.Spec.StorageClassName == nil || !classes[*pvc.Spec.StorageClassName] || pvc.Status.Phase != corev1.ClaimBound {
		return nil
	}
	want := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	have := pvc.Status.Capacity[corev1.ResourceStorage]
	if want.Cmp(have) <= 0 {
		return nil
	}
	pv, err := client.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if current := pv.Spec.Capacity[corev1.ResourceStorage]; current.Cmp(want) < 0 {
		pv.Spec.Capacity[corev1.ResourceStorage] = want
		if _, err := client.CoreV1().PersistentVolumes().Update(ctx, pv, metav1.UpdateOptions{}); err != nil {
			return err
		}
	}
	grown := pvc.DeepCopy()
	grown.Status.Capacity[corev1.ResourceStorage] = want
	grown.Status.AllocatedResources = corev1.ResourceList{corev1.ResourceStorage: want}
	grown.Status.AllocatedResourceStatuses = nil
	grown.Status.Conditions = nil
	_, err = client.CoreV1().PersistentVolumeClaims(pvc.Namespace).UpdateStatus(ctx, grown, metav1.UpdateOptions{})
	if err == nil {
		klog.InfoS("grew a claim", "claim", klog.KObj(pvc), "from", have.String(), "to", want.String())
	}
	return err
}

func main() {
	kubeconfig := flag.String("kubeconfig", "", "the kubeconfig of the cluster")
	root := flag.String("root", "", "the directory that holds the volumes")
	klog.InitFlags(nil)
	flag.Parse()
	if *kubeconfig == "" || *root == "" {
		klog.Fatal("--kubeconfig and --root are required")
	}
	config, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		klog.Fatalf("reading %s: %v", *kubeconfig, err)
	}
	config.UserAgent = "visitcounter-test-volumes"
	client := kubernetes.NewForConfigOrDie(config)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	// The resync retries a resize that failed.
	factory := informers.NewSharedInformerFactory(client, 10*time.Second)
	classInformer := factory.Storage().V1().StorageClasses()
	claimInformer := factory.Core().V1().PersistentVolumeClaims()
	_ = classInformer.Informer()
	ours := func() map[string]bool {
		classes := map[string]bool{}
		list, _ := classInformer.Lister().List(labels.Everything())
		for _, c := range list {
			if c.Provisioner == Provisioner {
				classes[c.Name] = true
			}
		}
		return classes
	}
	onClaim := func(obj any) {
		pvc, ok := obj.(*corev1.PersistentVolumeClaim)
		if !ok {
			return
		}
		if err := resize(ctx, client, ours(), pvc); err != nil {
			klog.ErrorS(err, "growing a claim", "claim", klog.KObj(pvc))
		}
	}
	// Informers start only when asked for before the factory starts; the
	// claims are handled once the classes are known.
	_ = claimInformer.Informer()
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	_, _ = claimInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    onClaim,
		UpdateFunc: func(_, obj any) { onClaim(obj) },
	})

	provisioner := controller.NewProvisionController(ctx, client, Provisioner, directories{root: *root},
		controller.LeaderElection(false))
	provisioner.Run(ctx)
}
