"""Real CIFAR-10 diffusion models: data loaders (data), diffusers UNet builders and safe loading (unet),
DDPM training (train, checkpoint), original-checkpoint conversion (convert) and the committed default
model (pretrained). Submodules are imported on demand so that `import real_models` stays light."""
