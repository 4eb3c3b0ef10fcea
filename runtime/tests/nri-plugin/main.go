// The NRI plugin of crust's NRI test (runtime/tests/nri.rs), written with NRI's own Go
// stub so that crustd is tested against the reference implementation of the plugin
// side. It records every event it sees, one JSON line each, and acts on the pods and
// containers the test marks with annotations:
//
//	nri.crust.test/adjust.<plugin name>: DIR  adds env NRI_TEST=<plugin name>, mounts
//	                                          DIR read-only at /nri and sets a 64 MiB
//	                                          memory limit
//	nri.crust.test/refuse: X    refuses CreateContainer
//	nri.crust.test/hang: X      holds RunPodSandbox until its request times out
//	nri.crust.test/reject-adjusted: X  as a validator, rejects the container when a
//	                            plugin adjusted its env
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sync"

	"github.com/containerd/nri/pkg/api"
	"github.com/containerd/nri/pkg/stub"
)

const (
	adjustKey = "nri.crust.test/adjust."
	refuseKey = "nri.crust.test/refuse"
	hangKey   = "nri.crust.test/hang"
	rejectKey = "nri.crust.test/reject-adjusted"
	memLimit  = 64 << 20
)

type event struct {
	Event     string            `json:"event"`
	Plugin    string            `json:"plugin"`
	Pod       string            `json:"pod,omitempty"`
	Container string            `json:"container,omitempty"`
	Name      string            `json:"name,omitempty"`
	Config    string            `json:"config,omitempty"`
	Pods      []string          `json:"pods,omitempty"`
	Env       []string          `json:"env,omitempty"`
	Memory    int64             `json:"memory,omitempty"`
	Extra     map[string]string `json:"extra,omitempty"`
}

type plugin struct {
	name string
	mu   sync.Mutex
	out  *os.File
}

func (p *plugin) record(e event) {
	e.Plugin = p.name
	line, _ := json.Marshal(e)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.out.Write(append(line, '\n'))
}

func (p *plugin) Configure(_ context.Context, config, runtime, version string) (stub.EventMask, error) {
	p.record(event{Event: "Configure", Config: config, Extra: map[string]string{"runtime": runtime, "version": version}})
	return 0, nil
}

func (p *plugin) Synchronize(_ context.Context, pods []*api.PodSandbox, ctrs []*api.Container) ([]*api.ContainerUpdate, error) {
	e := event{Event: "Synchronize"}
	for _, pod := range pods {
		e.Pods = append(e.Pods, pod.GetId())
	}
	p.record(e)
	return nil, nil
}

func podEvent(name string, pod *api.PodSandbox) event {
	return event{Event: name, Pod: pod.GetId(), Name: pod.GetName()}
}

func ctrEvent(name string, pod *api.PodSandbox, c *api.Container) event {
	e := event{Event: name, Pod: pod.GetId(), Container: c.GetId(), Name: c.GetName(), Env: c.GetEnv()}
	if l := c.GetLinux().GetResources().GetMemory().GetLimit(); l != nil {
		e.Memory = l.GetValue()
	}
	return e
}

func (p *plugin) RunPodSandbox(ctx context.Context, pod *api.PodSandbox) error {
	p.record(podEvent("RunPodSandbox", pod))
	if _, ok := pod.GetAnnotations()[hangKey]; ok {
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

func (p *plugin) StopPodSandbox(_ context.Context, pod *api.PodSandbox) error {
	p.record(podEvent("StopPodSandbox", pod))
	return nil
}

func (p *plugin) RemovePodSandbox(_ context.Context, pod *api.PodSandbox) error {
	p.record(podEvent("RemovePodSandbox", pod))
	return nil
}

func (p *plugin) CreateContainer(_ context.Context, pod *api.PodSandbox, c *api.Container) (*api.ContainerAdjustment, []*api.ContainerUpdate, error) {
	p.record(ctrEvent("CreateContainer", pod, c))
	if _, ok := c.GetAnnotations()[refuseKey]; ok {
		return nil, nil, fmt.Errorf("container %s refused by %s", c.GetName(), p.name)
	}
	dir, ok := c.GetAnnotations()[adjustKey+p.name]
	if !ok {
		return nil, nil, nil
	}
	adjust := &api.ContainerAdjustment{}
	adjust.AddEnv("NRI_TEST", p.name)
	adjust.AddMount(&api.Mount{Destination: "/nri", Type: "bind", Source: dir, Options: []string{"rbind", "ro"}})
	adjust.SetLinuxMemoryLimit(memLimit)
	return adjust, nil, nil
}

func (p *plugin) ValidateContainerAdjustment(_ context.Context, req *api.ValidateContainerAdjustmentRequest) error {
	e := event{Event: "ValidateContainerAdjustment", Pod: req.GetPod().GetId(), Container: req.GetContainer().GetId(), Name: req.GetContainer().GetName()}
	for _, kv := range req.GetAdjust().GetEnv() {
		e.Env = append(e.Env, kv.GetKey()+"="+kv.GetValue())
	}
	p.record(e)
	if _, ok := req.GetContainer().GetAnnotations()[rejectKey]; ok && len(req.GetAdjust().GetEnv()) > 0 {
		return fmt.Errorf("adjusted container %s rejected by %s", req.GetContainer().GetName(), p.name)
	}
	return nil
}

func (p *plugin) PostCreateContainer(_ context.Context, pod *api.PodSandbox, c *api.Container) error {
	p.record(ctrEvent("PostCreateContainer", pod, c))
	return nil
}

func (p *plugin) StartContainer(_ context.Context, pod *api.PodSandbox, c *api.Container) error {
	p.record(ctrEvent("StartContainer", pod, c))
	return nil
}

func (p *plugin) PostStartContainer(_ context.Context, pod *api.PodSandbox, c *api.Container) error {
	p.record(ctrEvent("PostStartContainer", pod, c))
	return nil
}

func (p *plugin) UpdateContainer(_ context.Context, pod *api.PodSandbox, c *api.Container, r *api.LinuxResources) ([]*api.ContainerUpdate, error) {
	e := ctrEvent("UpdateContainer", pod, c)
	if l := r.GetMemory().GetLimit(); l != nil {
		e.Memory = l.GetValue()
	}
	p.record(e)
	return nil, nil
}

func (p *plugin) PostUpdateContainer(_ context.Context, pod *api.PodSandbox, c *api.Container) error {
	p.record(ctrEvent("PostUpdateContainer", pod, c))
	return nil
}

func (p *plugin) StopContainer(_ context.Context, pod *api.PodSandbox, c *api.Container) ([]*api.ContainerUpdate, error) {
	p.record(ctrEvent("StopContainer", pod, c))
	return nil, nil
}

func (p *plugin) RemoveContainer(_ context.Context, pod *api.PodSandbox, c *api.Container) error {
	p.record(ctrEvent("RemoveContainer", pod, c))
	return nil
}

func main() {
	socket := flag.String("socket", "", "NRI socket to connect to (a pre-installed plugin gets its connection from crustd)")
	name := flag.String("name", "", "plugin name (a pre-installed plugin's is its file's)")
	idx := flag.String("idx", "", "plugin index (a pre-installed plugin's is its file's)")
	events := flag.String("events", os.Getenv("CRUST_NRI_TEST_EVENTS"), "file the events are appended to")
	flag.Parse()
	out, err := os.OpenFile(*events, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	p := &plugin{name: *name, out: out}
	if p.name == "" {
		p.name = os.Getenv("NRI_PLUGIN_NAME")
	}
	opts := []stub.Option{}
	if *socket != "" {
		opts = append(opts, stub.WithSocketPath(*socket), stub.WithPluginName(*name), stub.WithPluginIdx(*idx))
	}
	s, err := stub.New(p, opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := s.Run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
